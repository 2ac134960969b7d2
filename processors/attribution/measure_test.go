package attribution_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/schemas"
)

// Freshness measures, n times, the time from producing a touchpoint and a
// conversion of a new user to the conversion's revenue being visible in the
// ROI numbers (roi.Load on the rollups, polled every 5 ms). A processor must
// be running on names' topics and conn's database. It returns the sorted
// samples. One more sample is taken first and not returned: it includes the
// processor's start (group join, the rebalance as its other workers join,
// the ledger load), not the steady freshness.
func Freshness(ctx context.Context, cl *kgo.Client, conn driver.Conn, names kafka.Names, n int) ([]time.Duration, error) {
	partner := fmt.Sprintf("freshness-%d", time.Now().UnixNano())
	total := decimal.Zero
	var out []time.Duration
	for i := 0; i <= n; i++ {
		at := time.Now().UTC().Truncate(time.Second)
		user := fmt.Sprintf("%s-user-%d", partner, i)
		amount := decimal.NewFromInt(int64(i + 1))
		t := schemas.Touchpoint{SchemaVersion: schemas.SchemaVersion, ID: user + "-t", UserID: user, PartnerID: partner, Source: schemas.SourceAPIKey, OccurredAt: at.Add(-time.Second)}
		c := schemas.Conversion{SchemaVersion: schemas.SchemaVersion, ID: user + "-c", UserID: user, Kind: schemas.ConversionPurchase, Amount: amount, Currency: "USD", OccurredAt: at}
		tb, _ := json.Marshal(t)
		cb, _ := json.Marshal(c)
		total = total.Add(amount)
		start := time.Now()
		res := cl.ProduceSync(ctx,
			&kgo.Record{Topic: names.Topic(schemas.TopicTouchpoints), Key: []byte(user), Value: tb},
			&kgo.Record{Topic: names.Topic(schemas.TopicConversions), Key: []byte(user), Value: cb})
		if err := res.FirstErr(); err != nil {
			return nil, err
		}
		for {
			tots, err := roi.Load(ctx, conn, roi.Query{PartnerID: partner, Model: "last_touch", Window: 2, AsOf: at}, roi.Rollups)
			if err != nil {
				return nil, err
			}
			if len(tots) == 1 && tots[0].Revenue.Equal(total) {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		if i > 0 {
			out = append(out, time.Since(start))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Percentile returns the p-th percentile (0..100) of sorted samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1)*p/100 + 0.5)
	return sorted[min(i, len(sorted)-1)]
}
