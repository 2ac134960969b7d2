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

// The inserts fill their batches column by column (one typed slice per
// column, in the statement's column order) rather than row by row: a row
// Append boxes every value into an interface, an allocation per string,
// time and decimal of every row, and on the processor's hot path that
// garbage cost more CPU than the encoding itself.

func (p *Processor) insertTouches(ctx context.Context, b *batch, now time.Time) error {
	n := len(b.touches)
	if n == 0 {
		return nil
	}
	return p.send(ctx, "touchpoints", chsql.InsertTouchpoints, func(bt driver.Batch) error {
		id, user, partner, source, utmSource, utmMedium, utmCampaign, referrer, region, trace, topic :=
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		at, partition, offset := make([]time.Time, n), make([]int32, n), make([]int64, n)
		for i, t := range b.touches {
			id[i], user[i], partner[i], source[i] = t.ID, t.UserID, t.PartnerID, t.Source
			utmSource[i], utmMedium[i], utmCampaign[i] = t.UTMSource, t.UTMMedium, t.UTMCampaign
			referrer[i], region[i], trace[i], at[i] = t.Referrer, t.Region, t.TraceID, t.OccurredAt
			topic[i], partition[i], offset[i] = t.pos.topic, t.pos.partition, t.pos.offset
		}
		return appendColumns(bt, id, user, partner, source, utmSource, utmMedium, utmCampaign, referrer, region, trace,
			at, repeat(now, n), topic, partition, offset)
	}, n)
}

func (p *Processor) insertConvs(ctx context.Context, b *batch, now time.Time) error {
	n := len(b.convs)
	if n == 0 {
		return nil
	}
	return p.send(ctx, "conversions", chsql.InsertConversions, func(bt driver.Batch) error {
		id, user, kind, currency, refundOf, topic := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		amount, base := make([]decimal.Decimal, n), make([]decimal.Decimal, n)
		nc, at, partition, offset := make([]uint8, n), make([]time.Time, n), make([]int32, n), make([]int64, n)
		for i, c := range b.convs {
			id[i], user[i], kind[i], currency[i], refundOf[i] = c.ID, c.UserID, c.Kind, c.Currency, c.RefundOf
			amount[i], base[i], at[i] = c.Amount, c.AmountBase, c.At
			if c.NewCustomer {
				nc[i] = 1
			}
			topic[i], partition[i], offset[i] = c.pos.topic, c.pos.partition, c.pos.offset
		}
		return appendColumns(bt, id, user, kind, amount, currency, base, nc, refundOf, at, repeat(now, n), topic, partition, offset)
	}, n)
}

func (p *Processor) insertCosts(ctx context.Context, b *batch, now time.Time) error {
	n := len(b.costs)
	if n == 0 {
		return nil
	}
	return p.send(ctx, "costs", chsql.InsertCosts, func(bt driver.Batch) error {
		id, partner, currency, category, topic := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		amount, base := make([]decimal.Decimal, n), make([]decimal.Decimal, n)
		at, partition, offset := make([]time.Time, n), make([]int32, n), make([]int64, n)
		for i, c := range b.costs {
			id[i], partner[i], currency[i], category[i] = c.ID, c.PartnerID, c.Currency, c.Category
			amount[i], base[i], at[i] = c.Amount, c.AmountBase, c.OccurredAt
			topic[i], partition[i], offset[i] = c.pos.topic, c.pos.partition, c.pos.offset
		}
		return appendColumns(bt, id, partner, amount, currency, base, category, at, repeat(now, n), topic, partition, offset)
	}, n)
}

func (p *Processor) insertAttrs(ctx context.Context, b *batch, now time.Time) error {
	n := b.nattrs
	if n == 0 {
		return nil
	}
	return p.send(ctx, "attributions", chsql.InsertAttributions, func(bt driver.Batch) error {
		id, conv, user, partner, model, kind := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		version, at := make([]uint64, n), make([]time.Time, n)
		credit, revenue, nc := make([]decimal.Decimal, n), make([]decimal.Decimal, n), make([]decimal.Decimal, n)
		i := 0
		for _, s := range b.splits {
			for j := range s.rows {
				a := &s.rows[j]
				id[i], conv[i], user[i], partner[i], model[i], kind[i] = a.ID, a.ConversionID, a.UserID, a.PartnerID, a.Model, a.Kind
				version[i], credit[i], revenue[i], nc[i], at[i] = a.Version, a.Credit, a.Revenue, a.NewCustomer, a.At
				i++
			}
		}
		return appendColumns(bt, id, conv, user, partner, model, kind, version, credit, revenue, nc, at, repeat(now, n))
	}, n)
}

// appendColumns appends one typed slice per column of bt, in its order.
func appendColumns(bt driver.Batch, cols ...any) error {
	for i, c := range cols {
		if err := bt.Column(i).Append(c); err != nil {
			return fmt.Errorf("column %d: %w", i+1, err)
		}
	}
	return nil
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
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
	// Rows: the corrections, one ledger row per source partition (its
	// offsets increment), the '#params' row if needed, one row per topic id
	// to record, and the marker.
	var r rollCols
	for _, k := range keys {
		v := b.rollup[k]
		r.add(k.model, k.day.time(), k.partner, k.prev.time(), "", v.revenue.dec(), v.conversions.dec(), v.newCustomers.dec(),
			v.customers, v.cost.dec(), v.leads, v.attributions, v.costs, 0)
	}
	for _, tp := range srcs {
		r.add("", epoch, "", epoch, srcKey(tp.topic, tp.partition), zeroDec, zeroDec, zeroDec, 0, zeroDec, 0, 0, 0,
			b.ends[tp]-p.led.end(tp.topic, tp.partition))
	}
	if params {
		r.add("", epoch, p.led.params, epoch, paramsSrc, zeroDec, zeroDec, zeroDec, 0, zeroDec, 0, 0, 0, 1)
	}
	for _, row := range topicIDs {
		r.add("", epoch, row, epoch, topicSrc, zeroDec, zeroDec, zeroDec, 0, zeroDec, 0, 0, 0, 1)
	}
	r.add("", epoch, marker.String(), epoch, batchSrc, zeroDec, zeroDec, zeroDec, 0, zeroDec, 0, 0, 0, 0)
	return p.send(qctx, "roi_daily", chsql.InsertRollup, func(bt driver.Batch) error {
		return appendColumns(bt, r.model, r.day, r.partner, r.prev, r.src, r.revenue, r.conversions, r.newCustomers,
			r.customers, r.cost, r.leads, r.attributions, r.costs, r.offsets)
	}, len(r.model))
}

// rollCols are the columns of a rollup INSERT (chsql.RollupColumns).
type rollCols struct {
	model, partner, src                            []string
	day, prev                                      []time.Time
	revenue, conversions, newCustomers, cost       []decimal.Decimal
	customers, leads, attributions, costs, offsets []int64
}

func (r *rollCols) add(model string, day time.Time, partner string, prev time.Time, src string,
	revenue, conversions, newCustomers decimal.Decimal, customers int64, cost decimal.Decimal,
	leads, attributions, costs, offsets int64) {
	r.model, r.day, r.partner, r.prev, r.src = append(r.model, model), append(r.day, day), append(r.partner, partner), append(r.prev, prev), append(r.src, src)
	r.revenue, r.conversions, r.newCustomers = append(r.revenue, revenue), append(r.conversions, conversions), append(r.newCustomers, newCustomers)
	r.customers, r.cost, r.leads = append(r.customers, customers), append(r.cost, cost), append(r.leads, leads)
	r.attributions, r.costs, r.offsets = append(r.attributions, attributions), append(r.costs, costs), append(r.offsets, offsets)
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
