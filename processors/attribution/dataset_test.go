package attribution_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"

	"github.com/partners-engine/partners-engine/schemas"
)

// Dataset is a generated set of input records (tests, benchmarks, demos).
type Dataset struct {
	Touchpoints []schemas.Touchpoint
	Conversions []schemas.Conversion
	Costs       []schemas.Cost
}

// Len is the number of records.
func (d Dataset) Len() int { return len(d.Touchpoints) + len(d.Conversions) + len(d.Costs) }

// GenOptions shape a generated dataset.
type GenOptions struct {
	Seed       uint64
	Now        time.Time // records fall in [Now − Days, Now]
	Days       int
	Partners   int
	Users      int
	MaxTouches int     // per user
	MaxConvs   int     // per user
	RefundRate float64 // share of purchases refunded (fully or in half)
	CostsPer   int     // cost records per partner
	IDPrefix   string  // keeps ids of several datasets apart
}

// Generate returns a deterministic pseudo-random dataset: several partners
// touching overlapping users, purchases and signups in USD, EUR and GBP with
// up to 4 decimal places, full and partial refunds, and costs across days.
// Records come out in a shuffled order (late and out-of-order arrivals).
func Generate(o GenOptions) Dataset {
	r := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	span := int64(o.Days) * 24 * 3600
	at := func() time.Time {
		return o.Now.Add(-time.Duration(r.Int64N(span)) * time.Second).UTC().Truncate(time.Second)
	}
	currencies := []string{"USD", "EUR", "GBP"}
	amount := func(maxUnits int64) decimal.Decimal {
		return decimal.New(r.Int64N(maxUnits*10_000)+1, -4)
	}
	partner := func(i int) string { return fmt.Sprintf("%spartner-%02d", o.IDPrefix, i) }
	var d Dataset
	for u := 0; u < o.Users; u++ {
		user := fmt.Sprintf("%suser-%05d", o.IDPrefix, u)
		nt := r.IntN(o.MaxTouches + 1)
		for i := 0; i < nt; i++ {
			d.Touchpoints = append(d.Touchpoints, schemas.Touchpoint{
				SchemaVersion: schemas.SchemaVersion, ID: fmt.Sprintf("%s-t%d", user, i), UserID: user,
				PartnerID: partner(r.IntN(o.Partners)), Source: []string{"utm", "referral_header", "api_key"}[r.IntN(3)],
				OccurredAt: at(),
			})
		}
		nc := r.IntN(o.MaxConvs + 1)
		for i := 0; i < nc; i++ {
			c := schemas.Conversion{
				SchemaVersion: schemas.SchemaVersion, ID: fmt.Sprintf("%s-c%d", user, i), UserID: user,
				Kind: schemas.ConversionPurchase, Amount: amount(500), Currency: currencies[r.IntN(3)],
				NewCustomer: i == 0, OccurredAt: at(),
			}
			if r.IntN(4) == 0 {
				c.Kind, c.Amount = schemas.ConversionSignup, decimal.Zero
			}
			d.Conversions = append(d.Conversions, c)
			if c.Kind == schemas.ConversionPurchase && r.Float64() < o.RefundRate {
				ref := schemas.Conversion{
					SchemaVersion: schemas.SchemaVersion, ID: c.ID + "-refund", UserID: user,
					Kind: schemas.ConversionRefund, Amount: c.Amount.Neg(), Currency: c.Currency,
					RefundOf: c.ID, OccurredAt: c.OccurredAt.Add(time.Duration(r.Int64N(5*24*3600)) * time.Second),
				}
				if r.IntN(2) == 0 {
					ref.Amount = c.Amount.Div(decimal.NewFromInt(2)).Truncate(4).Neg()
				}
				if ref.OccurredAt.After(o.Now) {
					ref.OccurredAt = o.Now.UTC().Truncate(time.Second)
				}
				d.Conversions = append(d.Conversions, ref)
			}
		}
	}
	for p := 0; p < o.Partners; p++ {
		for i := 0; i < o.CostsPer; i++ {
			d.Costs = append(d.Costs, schemas.Cost{
				SchemaVersion: schemas.SchemaVersion, ID: fmt.Sprintf("%s-cost%d", partner(p), i), PartnerID: partner(p),
				Amount: amount(300), Currency: currencies[r.IntN(3)], Category: "commission", OccurredAt: at(),
			})
		}
	}
	r.Shuffle(len(d.Touchpoints), func(i, j int) { d.Touchpoints[i], d.Touchpoints[j] = d.Touchpoints[j], d.Touchpoints[i] })
	r.Shuffle(len(d.Conversions), func(i, j int) { d.Conversions[i], d.Conversions[j] = d.Conversions[j], d.Conversions[i] })
	return d
}

// Records returns the dataset as Kafka records on the topics of names,
// keyed as DESIGN.md says (user id, user id, partner id).
func (d Dataset) Records(names kafka.Names) ([]*kgo.Record, error) {
	out := make([]*kgo.Record, 0, d.Len())
	add := func(topic, key string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		out = append(out, &kgo.Record{Topic: names.Topic(topic), Key: []byte(key), Value: b})
		return nil
	}
	for _, t := range d.Touchpoints {
		if err := add(schemas.TopicTouchpoints, t.UserID, t); err != nil {
			return nil, err
		}
	}
	for _, c := range d.Conversions {
		if err := add(schemas.TopicConversions, c.UserID, c); err != nil {
			return nil, err
		}
	}
	for _, c := range d.Costs {
		if err := add(schemas.TopicCosts, c.PartnerID, c); err != nil {
			return nil, err
		}
	}
	return out, nil
}
