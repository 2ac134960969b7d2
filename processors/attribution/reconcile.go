package attribution

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// Mismatch is one key of roi_daily whose figures differ from the same
// figures computed from the raw tables.
type Mismatch struct {
	Model, Day, PartnerID, PrevDay string
	Rollup, Raw                    string // the figures, "" when the side has no row
}

func (m Mismatch) String() string {
	return fmt.Sprintf("%s/%s/%s/prev=%s: rollup {%s} raw {%s}", m.Model, m.Day, m.PartnerID, m.PrevDay, m.Rollup, m.Raw)
}

// Reconcile compares roi_daily with the raw tables (de-duplicated by id,
// latest version) for the days [from, to] (UTC, YYYY-MM-DD), key by key —
// (model, day, partner, previous day) — and returns every key that differs.
func (p *Processor) Reconcile(ctx context.Context, from, to string) ([]Mismatch, error) {
	want, err := p.rollupRows(ctx, chsql.ReconcileExpected, from, to)
	if err != nil {
		return nil, fmt.Errorf("reconcile: raw tables: %w", err)
	}
	got, err := p.rollupRows(ctx, chsql.ReconcileActual, from, to)
	if err != nil {
		return nil, fmt.Errorf("reconcile: roi_daily: %w", err)
	}
	var out []Mismatch
	for k, w := range want {
		if g := got[k]; g != w {
			out = append(out, Mismatch{Model: k[0], Day: k[1], PartnerID: k[2], PrevDay: k[3], Rollup: g, Raw: w})
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			out = append(out, Mismatch{Model: k[0], Day: k[1], PartnerID: k[2], PrevDay: k[3], Rollup: g})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

func (p *Processor) rollupRows(ctx context.Context, st chsql.Statement, from, to string) (map[[4]string]string, error) {
	rows, err := p.opt.Conn.Query(ctx, st.SQL, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[4]string]string{}
	for rows.Next() {
		var model, partner string
		var d, prev time.Time
		var revenue, conversions, newCustomers, cost decimal.Decimal
		var customers, leads, attributions, costs int64
		if err := rows.Scan(&model, &d, &partner, &prev, &revenue, &conversions, &newCustomers, &customers,
			&cost, &leads, &attributions, &costs); err != nil {
			return nil, err
		}
		k := [4]string{model, d.UTC().Format(time.DateOnly), partner, prev.UTC().Format(time.DateOnly)}
		out[k] = fmt.Sprintf("revenue=%s conversions=%s new_customers=%s customers=%d cost=%s leads=%d attributions=%d costs=%d",
			revenue, conversions, newCustomers, customers, cost, leads, attributions, costs)
	}
	return out, rows.Err()
}

// reconcileLoop runs Reconcile every partner.attribution.reconcile.interval
// over the last reconcile.days days until ctx ends. A mismatch is checked
// again after twice the batch linger plus a second (a batch whose raw rows
// are in and whose rollup insert is on its way looks like one); what is
// still there is counted in partners_attribution_reconcile_mismatches and
// logged as an error naming each key.
func (p *Processor) reconcileLoop(ctx context.Context) {
	rc := p.opt.Config.Reconcile
	if rc.Interval <= 0 {
		return
	}
	t := time.NewTicker(rc.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := p.ReconcileOnce(ctx); err != nil && ctx.Err() == nil {
			p.opt.Log.Warn("attribution reconciliation did not run", "err", err)
		}
	}
}

// ReconcileOnce is one round of the periodic reconciliation: Reconcile over
// the configured days ending today (UTC), a second look at what differs, the
// metric and the log line. It returns the mismatches that stayed.
func (p *Processor) ReconcileOnce(ctx context.Context) ([]Mismatch, error) {
	now := p.opt.Now().UTC()
	from := now.AddDate(0, 0, -(p.opt.Config.Reconcile.Days - 1)).Format(time.DateOnly)
	to := now.Format(time.DateOnly)
	first, err := p.Reconcile(ctx, from, to)
	if err != nil {
		return nil, err
	}
	bad := first
	if len(first) > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2*p.opt.Config.Batch.Linger + time.Second):
		}
		again, err := p.Reconcile(ctx, from, to)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, m := range first {
			seen[m.String()] = true
		}
		bad = bad[:0]
		for _, m := range again {
			if seen[m.String()] {
				bad = append(bad, m)
			}
		}
	}
	p.m.recRuns.Inc()
	p.m.recBad.Set(float64(len(bad)))
	if len(bad) > 0 {
		show := bad
		if len(show) > 20 {
			show = show[:20]
		}
		keys := make([]string, len(show))
		for i, m := range show {
			keys[i] = m.String()
		}
		p.opt.Log.Error("roi_daily and the raw tables disagree", "from", from, "to", to, "mismatches", len(bad), "keys", keys)
	}
	return bad, nil
}
