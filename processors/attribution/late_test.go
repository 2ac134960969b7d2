package attribution_test

import (
	"context"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/schemas"
)

func revenueOf(t *testing.T, e *env, model string, window int, src roi.Source) map[string]string {
	t.Helper()
	tots, err := roi.Load(context.Background(), e.conn, roi.Query{Model: model, Window: window}, src)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, x := range tots {
		out[x.PartnerID] = x.Revenue.StringFixed(2) + "/" + x.Conversions.StringFixed(4)
	}
	return out
}

func expectRevenue(t *testing.T, e *env, what, model string, window int, want map[string]string) {
	t.Helper()
	for _, src := range []roi.Source{roi.Rollups, roi.Raw} {
		got := revenueOf(t, e, model, window, src)
		for p, w := range want {
			if got[p] != w {
				t.Fatalf("%s (%s, %d days, source %d): partner %s revenue/conversions %s, want %s (all %v)", what, model, window, src, p, got[p], w, got)
			}
		}
	}
}

// TestLateAndOutOfWindow: a touchpoint that arrives after its conversion
// re-attributes it (new version rows win over the old ones); a refund that
// arrives before its conversion is credited when the conversion arrives;
// a touchpoint older than the lookback window gets no credit (but is a
// lead of the days it happened); a conversion older than the ROI window is
// outside that window's numbers and inside a longer one.
func TestLateAndOutOfWindow(t *testing.T) {
	e := newEnv(t)
	n := e.names
	tp, cv := n.Topic(schemas.TopicTouchpoints), n.Topic(schemas.TopicConversions)
	T := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	touch := func(id, user, partner string, at time.Time) *kgo.Record {
		return rec(tp, user, schemas.Touchpoint{SchemaVersion: "1", ID: id, UserID: user, PartnerID: partner, Source: "utm", OccurredAt: at})
	}
	conv := func(id, user, kind, amount, refundOf string, at time.Time) *kgo.Record {
		return rec(cv, user, schemas.Conversion{SchemaVersion: "1", ID: id, UserID: user, Kind: kind,
			Amount: decimal.RequireFromString(amount), Currency: "USD", RefundOf: refundOf, OccurredAt: at})
	}
	e.start(t, nil)

	// u1: touch A two days before, conversion; then a late touch B one day before.
	e.publish(t, []*kgo.Record{touch("a1", "u1", "A", T.Add(-48*time.Hour)), conv("c1", "u1", "purchase", "100", "", T)})
	e.waitCaughtUp(t, 60*time.Second)
	expectRevenue(t, e, "before the late touch", "last_touch", 30, map[string]string{"A": "100.00/1.0000"})
	e.publish(t, []*kgo.Record{touch("b1", "u1", "B", T.Add(-24*time.Hour))})
	e.waitCaughtUp(t, 60*time.Second)
	expectRevenue(t, e, "after the late touch", "last_touch", 30, map[string]string{"A": "0.00/0.0000", "B": "100.00/1.0000"})
	expectRevenue(t, e, "after the late touch", "linear", 30, map[string]string{"A": "50.00/0.5000", "B": "50.00/0.5000"})

	// u1: a touch of C 31 days before the conversion is outside the 30-day lookback.
	e.publish(t, []*kgo.Record{touch("c-old", "u1", "C", T.Add(-31*24*time.Hour))})
	e.waitCaughtUp(t, 60*time.Second)
	expectRevenue(t, e, "touch older than the lookback", "linear", 60, map[string]string{"A": "50.00/0.5000", "B": "50.00/0.5000", "C": "0.00/0.0000"})
	leads, err := roi.Load(context.Background(), e.conn, roi.Query{PartnerID: "C", Model: "linear", Window: 60}, roi.Rollups)
	if err != nil || len(leads) != 1 || leads[0].Leads != 1 {
		t.Fatalf("C is a lead in a 60-day window: %+v %v", leads, err)
	}

	// u2: the refund arrives before its purchase.
	e.publish(t, []*kgo.Record{touch("a2", "u2", "A", T.Add(-time.Hour)), conv("r2", "u2", "refund", "-40", "c2", T.Add(time.Minute))})
	e.waitCaughtUp(t, 60*time.Second)
	expectRevenue(t, e, "refund before its purchase", "last_touch", 30, map[string]string{"A": "0.00/0.0000"})
	e.publish(t, []*kgo.Record{conv("c2", "u2", "purchase", "100", "", T)})
	e.waitCaughtUp(t, 60*time.Second)
	expectRevenue(t, e, "purchase after its refund", "last_touch", 30, map[string]string{"A": "60.00/0.0000"})

	// u3: a conversion 40 days ago: outside a 30-day ROI window, inside 60.
	old := T.Add(-40 * 24 * time.Hour)
	e.publish(t, []*kgo.Record{touch("b3", "u3", "B", old.Add(-time.Hour)), conv("c3", "u3", "purchase", "7", "", old)})
	e.waitCaughtUp(t, 60*time.Second)
	expectRevenue(t, e, "old conversion, short window", "last_touch", 30, map[string]string{"B": "100.00/1.0000"})
	expectRevenue(t, e, "old conversion, long window", "last_touch", 60, map[string]string{"B": "107.00/2.0000"})
}
