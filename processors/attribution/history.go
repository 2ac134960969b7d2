package attribution

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// history is what the processor knows of one user: every touchpoint and
// conversion, by id. It is cached in an LRU (partner.attribution.
// history_cache_size users); on a miss it is loaded from ClickHouse, which
// holds every record of every committed batch.
type history struct {
	touches map[string]models.Touch
	convs   map[string]conv
}

func newHistory() *history {
	return &history{touches: map[string]models.Touch{}, convs: map[string]conv{}}
}

func (h *history) addTouch(t models.Touch) { h.touches[t.ID] = t }
func (h *history) addConv(c conv)          { h.convs[c.ID] = c }

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

// loadChunkBytes bounds the user ids bound into one query (18.16's
// max_query_size is 256 KiB).
const loadChunkBytes = 128 << 10

// histories returns the history of every user, from the cache or, for the
// misses, from ClickHouse (one query per table per chunk of users).
func (p *Processor) histories(ctx context.Context, users map[string]bool) (map[string]*history, error) {
	out := make(map[string]*history, len(users))
	var miss []string
	for _, u := range sortedKeys(users) {
		if h, ok := p.hist.Get(u); ok {
			out[u] = h
			continue
		}
		out[u] = newHistory()
		miss = append(miss, u)
	}
	for len(miss) > 0 {
		n, size := 0, 0
		for n < len(miss) && (n == 0 || size+len(miss[n])+4 <= loadChunkBytes) {
			size += len(miss[n]) + 4
			n++
		}
		chunk := miss[:n]
		miss = miss[n:]
		// The two scans are independent; each fills its own maps.
		tch, cch := map[string][]models.Touch{}, map[string][]conv{}
		var g errgroup.Group
		g.Go(func() error { return p.loadTouches(ctx, chunk, tch) })
		g.Go(func() error { return p.loadConvs(ctx, chunk, cch) })
		if err := g.Wait(); err != nil {
			return nil, err
		}
		for u, ts := range tch {
			for _, t := range ts {
				out[u].addTouch(t)
			}
		}
		for u, cs := range cch {
			for _, c := range cs {
				out[u].addConv(c)
			}
		}
	}
	return out, nil
}

func (p *Processor) loadTouches(ctx context.Context, users []string, out map[string][]models.Touch) error {
	rows, err := p.opt.Conn.Query(ctx, chsql.TouchHistory.SQL, groupSet(users))
	if err != nil {
		return fmt.Errorf("load touchpoint history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var u string
		var t models.Touch
		if err := rows.Scan(&u, &t.ID, &t.PartnerID, &t.At); err != nil {
			return fmt.Errorf("load touchpoint history: %w", err)
		}
		t.At = t.At.UTC()
		out[u] = append(out[u], t)
	}
	return rows.Err()
}

func (p *Processor) loadConvs(ctx context.Context, users []string, out map[string][]conv) error {
	rows, err := p.opt.Conn.Query(ctx, chsql.ConversionHistory.SQL, groupSet(users))
	if err != nil {
		return fmt.Errorf("load conversion history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c conv
		var nc uint8
		var amount, base decimal.Decimal
		if err := rows.Scan(&c.UserID, &c.ID, &c.Kind, &c.RefundOf, &amount, &c.Currency, &base, &nc, &c.At); err != nil {
			return fmt.Errorf("load conversion history: %w", err)
		}
		c.Amount, c.AmountBase, c.NewCustomer, c.At = amount, base, nc == 1, c.At.UTC()
		out[c.UserID] = append(out[c.UserID], c)
	}
	return rows.Err()
}

// groupSet binds ids as a tuple, for "IN ?" (a plain slice binds as an
// array, which IN does not take on 18.16).
func groupSet(ids []string) clickhouse.GroupSet {
	v := make([]any, len(ids))
	for i, id := range ids {
		v[i] = id
	}
	return clickhouse.GroupSet{Value: v}
}
