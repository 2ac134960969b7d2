package attribution

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// insert writes the batch's raw rows, one INSERT per table naming its
// columns (clickhouse-go batches need that on 18.16), the four tables
// concurrently. Raw rows are at least once: a retried or replayed batch
// writes identical rows, which readers de-duplicate by id, and rows of a
// batch whose rollup insert never landed are invisible to the history (their
// positions are past the ledger's end offsets).
func (p *Processor) insert(ctx context.Context, b *batch) error {
	now := p.opt.Now().UTC().Truncate(time.Second)
	var g errgroup.Group
	g.Go(func() error { return p.insertTouches(ctx, b, now) })
	g.Go(func() error { return p.insertConvs(ctx, b, now) })
	g.Go(func() error { return p.insertCosts(ctx, b, now) })
	g.Go(func() error { return p.insertAttrs(ctx, b, now) })
	return g.Wait()
}

func (p *Processor) insertTouches(ctx context.Context, b *batch, now time.Time) error {
	if len(b.touches) == 0 {
		return nil
	}
	return p.send(ctx, "touchpoints", chsql.InsertTouchpoints, func(bt driver.Batch) error {
		for _, t := range b.touches {
			if err := bt.Append(t.ID, t.UserID, t.PartnerID, t.Source, t.UTMSource, t.UTMMedium, t.UTMCampaign,
				t.Referrer, t.Region, t.TraceID, t.OccurredAt, now, t.pos.topic, t.pos.partition, t.pos.offset); err != nil {
				return err
			}
		}
		return nil
	}, len(b.touches))
}

func (p *Processor) insertConvs(ctx context.Context, b *batch, now time.Time) error {
	if len(b.convs) == 0 {
		return nil
	}
	return p.send(ctx, "conversions", chsql.InsertConversions, func(bt driver.Batch) error {
		for _, c := range b.convs {
			nc := uint8(0)
			if c.NewCustomer {
				nc = 1
			}
			if err := bt.Append(c.ID, c.UserID, c.Kind, c.Amount, c.Currency, c.AmountBase, nc, c.RefundOf, c.At, now,
				c.pos.topic, c.pos.partition, c.pos.offset); err != nil {
				return err
			}
		}
		return nil
	}, len(b.convs))
}

func (p *Processor) insertCosts(ctx context.Context, b *batch, now time.Time) error {
	if len(b.costs) == 0 {
		return nil
	}
	return p.send(ctx, "costs", chsql.InsertCosts, func(bt driver.Batch) error {
		for _, c := range b.costs {
			if err := bt.Append(c.ID, c.PartnerID, c.Amount, c.Currency, c.AmountBase, c.Category, c.OccurredAt, now,
				c.pos.topic, c.pos.partition, c.pos.offset); err != nil {
				return err
			}
		}
		return nil
	}, len(b.costs))
}

func (p *Processor) insertAttrs(ctx context.Context, b *batch, now time.Time) error {
	if len(b.attrs) == 0 {
		return nil
	}
	return p.send(ctx, "attributions", chsql.InsertAttributions, func(bt driver.Batch) error {
		for _, a := range b.attrs {
			if err := bt.Append(a.ID, a.ConversionID, a.UserID, a.PartnerID, a.Model, a.Kind, a.Version,
				a.Credit, a.Revenue, a.NewCustomer, a.At, now); err != nil {
				return err
			}
		}
		return nil
	}, len(b.attrs))
}

// insertRollup writes the batch's corrections and ledger rows as one
// INSERT (one block, one part: it lands whole or not at all), under a query
// id the ledger's fence can wait for. params adds the row recording the
// model parameters.
//
// The block is a function of the batch and the ledger it started from: its
// rows are sorted, and a marker row (src '#batch', partner_id naming every
// partition's old and new end offset, all sums zero, so merges remove it)
// makes it unique. On replicated tables (cluster mode) ClickHouse drops a
// block identical to one it already committed: a retry of an INSERT whose
// outcome was lost, computed again from the same ledger — possible when the
// replica that took it went down before the other fetched it — is not
// counted twice, while two different batches never look alike.
func (p *Processor) insertRollup(ctx context.Context, b *batch, params bool, topicIDs []string) error {
	qctx := clickhouse.Context(ctx, clickhouse.WithQueryID(p.led.queryID()))
	epoch := time.Unix(0, 0).UTC()
	keys := make([]rollKey, 0, len(b.rollup))
	for k, v := range b.rollup {
		if !v.zero() {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b rollKey) int {
		return cmp.Or(cmp.Compare(a.model, b.model), cmp.Compare(a.day, b.day), cmp.Compare(a.partner, b.partner), cmp.Compare(a.prev, b.prev))
	})
	srcs := make([]tp, 0, len(b.ends))
	for k := range b.ends {
		srcs = append(srcs, k)
	}
	slices.SortFunc(srcs, func(a, b tp) int { return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition)) })
	var marker strings.Builder
	for _, tp := range srcs {
		fmt.Fprintf(&marker, "%s@%d-%d;", srcKey(tp.topic, tp.partition), p.led.end(tp.topic, tp.partition), b.ends[tp])
	}
	if marker.Len() == 0 {
		marker.WriteString("-")
	}
	n := len(keys) + len(srcs) + len(topicIDs) + 1
	return p.send(qctx, "roi_daily", chsql.InsertRollup, func(bt driver.Batch) error {
		for _, k := range keys {
			v := b.rollup[k]
			if err := bt.Append(k.model, k.day.time(), k.partner, k.prev.time(), "", v.revenue, v.conversions, v.newCustomers,
				v.customers, v.cost, v.leads, v.attributions, v.costs, int64(0)); err != nil {
				return err
			}
		}
		for _, tp := range srcs {
			inc := b.ends[tp] - p.led.end(tp.topic, tp.partition)
			if err := bt.Append("", epoch, "", epoch, srcKey(tp.topic, tp.partition), zeroDec, zeroDec, zeroDec, int64(0), zeroDec, int64(0),
				int64(0), int64(0), inc); err != nil {
				return err
			}
		}
		if params {
			if err := bt.Append("", epoch, p.led.params, epoch, paramsSrc, zeroDec, zeroDec, zeroDec, int64(0), zeroDec,
				int64(0), int64(0), int64(0), int64(1)); err != nil {
				return err
			}
		}
		for _, row := range topicIDs {
			if err := bt.Append("", epoch, row, epoch, topicSrc, zeroDec, zeroDec, zeroDec, int64(0), zeroDec,
				int64(0), int64(0), int64(0), int64(1)); err != nil {
				return err
			}
		}
		return bt.Append("", epoch, marker.String(), epoch, batchSrc, zeroDec, zeroDec, zeroDec, int64(0), zeroDec,
			int64(0), int64(0), int64(0), int64(0))
	}, n)
}

// batchSrc is the src of a rollup INSERT's marker row (insertRollup).
const batchSrc = "#batch"

var zeroDec = decimal.Zero

func (p *Processor) send(ctx context.Context, table string, st chsql.Statement, fill func(driver.Batch) error, n int) error {
	bt, err := p.opt.Conn.PrepareBatch(ctx, st.SQL)
	if err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	if err := fill(bt); err != nil {
		_ = bt.Abort()
		return fmt.Errorf("insert %s: %w", table, err)
	}
	if err := bt.Send(); err != nil {
		return fmt.Errorf("insert %s: %w", table, err)
	}
	p.m.rows.WithLabelValues(table).Add(float64(n))
	return nil
}
