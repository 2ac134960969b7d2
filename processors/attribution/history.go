package attribution

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// history is what the rollup holds of one user: every committed touchpoint
// and conversion, by id, and every conversion's current attribution (the
// split whose sums the rollup contains). It is cached in an LRU
// (partner.attribution.history_cache_size users) and replaced only after a
// batch's rollup insert landed; on a miss it is rebuilt from ClickHouse from
// the rows the ledger counts as committed (see ledger.go), and the
// attributions are computed again from them — the same pure function the
// processor used, so the result is what the rollup holds.
type history struct {
	touches map[string]models.Touch
	convs   map[string]conv
	attrs   map[string]*split // conversion id → current attribution; missing: unattributed
}

// split is one conversion's attribution under every model: rows for every
// (model, partner) with a share, version = eligible touches.
type split struct {
	version uint64
	rows    []attrRow
}

func newHistory() *history {
	return &history{touches: map[string]models.Touch{}, convs: map[string]conv{}, attrs: map[string]*split{}}
}

// clone copies h so a batch can change it without touching the cache until
// the batch is committed (splits are replaced, never mutated).
func (h *history) clone() *history {
	return &history{touches: maps.Clone(h.touches), convs: maps.Clone(h.convs), attrs: maps.Clone(h.attrs)}
}

func (h *history) touchList() []models.Touch {
	out := make([]models.Touch, 0, len(h.touches))
	for _, t := range h.touches {
		out = append(out, t)
	}
	return out
}

// anchor is the time a conversion is attributed at: its own, or for a
// refund the refunded conversion's (same touches, same split). A refund of
// a conversion not seen yet has no anchor.
func (h *history) anchor(c conv) (time.Time, bool) {
	if c.Kind != schemas.ConversionRefund {
		return c.At, true
	}
	orig, ok := h.convs[c.RefundOf]
	if !ok || orig.Kind == schemas.ConversionRefund {
		return time.Time{}, false
	}
	return orig.At, true
}

// histories returns the committed history of every user, from the cache or,
// for the misses, from ClickHouse (one query per table).
func (p *Processor) histories(ctx context.Context, users []string) (map[string]*history, error) {
	out := make(map[string]*history, len(users))
	var miss []string
	for _, u := range users {
		if h, ok := p.hist.Get(u); ok {
			out[u] = h
			continue
		}
		out[u] = newHistory()
		miss = append(miss, u)
	}
	if len(miss) == 0 {
		return out, nil
	}
	// One query per table for every miss of the batch, the users sent as a
	// set beside it (never as SQL text: any number of ids of any content).
	// The two scans are independent; each fills its own map.
	tch, cch := map[string][]models.Touch{}, map[string][]conv{}
	var g errgroup.Group
	g.Go(func() error { return p.loadTouches(ctx, miss, tch) })
	g.Go(func() error { return p.loadConvs(ctx, miss, cch) })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for u, ts := range tch {
		for _, t := range ts {
			out[u].touches[t.ID] = t
		}
	}
	for u, cs := range cch {
		for _, c := range cs {
			out[u].convs[c.ID] = c
		}
	}
	for _, u := range miss {
		if err := p.attributeAll(out[u]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// attributeAll computes the current attribution of every conversion of a
// history loaded from ClickHouse.
func (p *Processor) attributeAll(h *history) error {
	for _, c := range h.convs {
		s, err := p.attribute(h, c)
		if err != nil {
			return err
		}
		if s != nil {
			h.attrs[c.ID] = s
		}
	}
	return nil
}

func (p *Processor) loadTouches(ctx context.Context, users []string, out map[string][]models.Touch) error {
	qctx, err := chsql.WithSets(ctx, chsql.Set{Name: chsql.SetHistoryUsers, Values: users})
	if err != nil {
		return err
	}
	rows, err := p.opt.Conn.Query(qctx, chsql.TouchHistory.SQL)
	if err != nil {
		return fmt.Errorf("load touchpoint history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var t models.Touch
		var pos []string
		if err := rows.Scan(&u, &t.ID, &t.PartnerID, &t.At, &pos); err != nil {
			return fmt.Errorf("load touchpoint history: %w", err)
		}
		if !p.led.committedAny(pos) {
			continue
		}
		t.At = t.At.UTC()
		out[u] = append(out[u], t)
	}
	return rows.Err()
}

func (p *Processor) loadConvs(ctx context.Context, users []string, out map[string][]conv) error {
	qctx, err := chsql.WithSets(ctx, chsql.Set{Name: chsql.SetHistoryUsers, Values: users})
	if err != nil {
		return err
	}
	rows, err := p.opt.Conn.Query(qctx, chsql.ConversionHistory.SQL)
	if err != nil {
		return fmt.Errorf("load conversion history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c conv
		var nc uint8
		var amount, base decimal.Decimal
		var pos []string
		if err := rows.Scan(&c.UserID, &c.ID, &c.Kind, &c.RefundOf, &amount, &c.Currency, &base, &nc, &c.At, &pos); err != nil {
			return fmt.Errorf("load conversion history: %w", err)
		}
		if !p.led.committedAny(pos) {
			continue
		}
		c.Amount, c.AmountBase, c.NewCustomer, c.At = amount, base, nc == 1, c.At.UTC()
		out[c.UserID] = append(out[c.UserID], c)
	}
	return rows.Err()
}

// knownCosts returns which of the batch's cost ids are already counted:
// from the cache of committed cost ids, else from ClickHouse (committed rows
// only).
func (p *Processor) knownCosts(ctx context.Context, cs []cost) (map[string]bool, error) {
	known := map[string]bool{}
	partners, ids := map[string]bool{}, map[string]bool{}
	for _, c := range cs {
		if p.costIDs.Contains(c.ID) {
			known[c.ID] = true
			continue
		}
		partners[c.PartnerID], ids[c.ID] = true, true
	}
	if len(ids) == 0 {
		return known, nil
	}
	qctx, err := chsql.WithSets(ctx, chsql.Set{Name: chsql.SetCostPartners, Values: sortedKeys(partners)},
		chsql.Set{Name: chsql.SetCostIDs, Values: sortedKeys(ids)})
	if err != nil {
		return nil, err
	}
	rows, err := p.opt.Conn.Query(qctx, chsql.CostHistory.SQL)
	if err != nil {
		return nil, fmt.Errorf("load cost history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var pos []string
		if err := rows.Scan(&id, &pos); err != nil {
			return nil, fmt.Errorf("load cost history: %w", err)
		}
		if p.led.committedAny(pos) {
			known[id] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load cost history: %w", err)
	}
	return known, nil
}
