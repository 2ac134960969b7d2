package attribution

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// insert writes the batch's rows, one INSERT per table naming its columns
// (clickhouse-go batches need that on 18.16), the four tables concurrently;
// a failure anywhere fails the whole batch, which is retried as a whole
// (every row has a deterministic id) and not committed before all four
// succeeded.
func (p *Processor) insert(ctx context.Context, b *batch) error {
	now := p.opt.Now().UTC().Truncate(1e9)
	var g errgroup.Group
	g.Go(func() error { return p.insertTouches(ctx, b, now) })
	g.Go(func() error { return p.insertConvs(ctx, b, now) })
	g.Go(func() error { return p.insertCosts(ctx, b, now) })
	g.Go(func() error { return p.insertAttrs(ctx, b, now) })
	return g.Wait()
}

func (p *Processor) insertTouches(ctx context.Context, b *batch, now time.Time) error {
	if len(b.touches) > 0 {
		err := p.send(ctx, "touchpoints", chsql.InsertTouchpoints, func(bt driver.Batch) error {
			for _, t := range b.touches {
				if err := bt.Append(t.ID, t.UserID, t.PartnerID, t.Source, t.UTMSource, t.UTMMedium, t.UTMCampaign,
					t.Referrer, t.Region, t.TraceID, t.OccurredAt, now); err != nil {
					return err
				}
			}
			return nil
		}, len(b.touches))
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *Processor) insertConvs(ctx context.Context, b *batch, now time.Time) error {
	if len(b.convs) > 0 {
		err := p.send(ctx, "conversions", chsql.InsertConversions, func(bt driver.Batch) error {
			for _, c := range b.convs {
				nc := uint8(0)
				if c.NewCustomer {
					nc = 1
				}
				if err := bt.Append(c.ID, c.UserID, c.Kind, c.Amount, c.Currency, c.AmountBase, nc, c.RefundOf, c.At, now); err != nil {
					return err
				}
			}
			return nil
		}, len(b.convs))
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *Processor) insertCosts(ctx context.Context, b *batch, now time.Time) error {
	if len(b.costs) > 0 {
		err := p.send(ctx, "costs", chsql.InsertCosts, func(bt driver.Batch) error {
			for _, c := range b.costs {
				if err := bt.Append(c.ID, c.PartnerID, c.Amount, c.Currency, c.AmountBase, c.Category, c.OccurredAt, now); err != nil {
					return err
				}
			}
			return nil
		}, len(b.costs))
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *Processor) insertAttrs(ctx context.Context, b *batch, now time.Time) error {
	if len(b.attrs) > 0 {
		err := p.send(ctx, "attributions", chsql.InsertAttributions, func(bt driver.Batch) error {
			for _, a := range b.attrs {
				if err := bt.Append(a.ID, a.ConversionID, a.UserID, a.PartnerID, a.Model, a.Kind, a.Version,
					a.Credit, a.Revenue, a.NewCustomer, a.At, now); err != nil {
					return err
				}
			}
			return nil
		}, len(b.attrs))
		if err != nil {
			return err
		}
	}
	return nil
}

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
