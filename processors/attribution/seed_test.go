package attribution_test

import (
	"context"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
)

// TestSeedSyntheticExact guards the `make bench` ROI check: the seed's
// duplicate and re-attribution steps must write copies of a record with the
// record's own time (a real replay does), or a copy inserted seconds later
// lands on the next UTC day near midnight and the daily rollups count it
// twice while the raw tables (one row per id) do not — the intermittent
// "rollups and raw tables disagree" of a bench on a loaded server. The
// seed is anchored 2 s after a UTC midnight so its newest rows straddle a
// day boundary, and the figures are checked against closed forms and
// rollups against raw tables for every model and several windows.
func TestSeedSyntheticExact(t *testing.T) {
	cfg := testenv.Config(t)
	conn := testenv.ClickHouse(t, cfg)
	ctx := context.Background()
	const n = 200_000 // conversions k < 40000 at asOf−k s, costs i < 20000, touches j < 200000
	asOf := time.Now().UTC().Truncate(24 * time.Hour).Add(2 * time.Second)
	if err := SeedSynthetic(ctx, conn, n, asOf); err != nil {
		t.Fatal(err)
	}

	// The seed does write duplicates and superseded versions…
	var rows, ids, costRows, costIDs uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(id) FROM attributions").Scan(&rows, &ids); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(id) FROM costs").Scan(&costRows, &costIDs); err != nil {
		t.Fatal(err)
	}
	if rows != n+n/10+n/20 || ids != n || costRows != n/10+n/100 || costIDs != n/10 {
		t.Fatalf("seed shape: %d attribution rows of %d ids, %d cost rows of %d ids", rows, ids, costRows, costIDs)
	}
	// …and every copy of a record carries the same event time.
	for _, q := range []string{
		"SELECT count() FROM (SELECT id FROM attributions GROUP BY id HAVING uniqExact(converted_at) > 1)",
		"SELECT count() FROM (SELECT id FROM costs GROUP BY id HAVING uniqExact(occurred_at) > 1)",
	} {
		var bad uint64
		if err := conn.QueryRow(ctx, q).Scan(&bad); err != nil {
			t.Fatal(err)
		}
		if bad != 0 {
			t.Errorf("%d ids have copies at different times: %s", bad, q)
		}
	}

	sum := func(ts []roi.Totals, model string) (rev, conv, nc, cost decimal.Decimal, cust, leads uint64) {
		for _, x := range ts {
			if x.Model == model {
				rev, conv, nc, cust = rev.Add(x.Revenue), conv.Add(x.Conversions), nc.Add(x.NewCustomers), cust+x.Customers
				cost, leads = cost.Add(x.Cost), leads+x.Leads
			}
		}
		return
	}
	type want struct {
		rev, conv, nc, cost string
		cust, leads         uint64
	}
	for _, c := range []struct {
		window int
		want   want
	}{
		// Day of asOf: k, i, j ∈ {0, 1, 2}. Revenue k/100, new customer when k%3 = 0, cost i.
		{1, want{"0.03", "3", "1", "3", 3, 3}},
		// Everything: Σk/100 for k < 40000, ⌈40000/3⌉ new customers, 20 × Σ(0..999) cost,
		// 150000 distinct (user, partner) pairs touched.
		{3650, want{"7999800", "40000", "13334", "9990000", 40000, 150000}},
	} {
		for _, src := range []roi.Source{roi.Rollups, roi.Raw} {
			ts, err := roi.Load(ctx, conn, roi.Query{Window: c.window, AsOf: asOf}, src)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range models.All {
				rev, conv, nc, cost, cust, leads := sum(ts, m)
				w := c.want
				if !rev.Equal(decimal.RequireFromString(w.rev)) || !conv.Equal(decimal.RequireFromString(w.conv)) ||
					!nc.Equal(decimal.RequireFromString(w.nc)) || !cost.Equal(decimal.RequireFromString(w.cost)) ||
					cust != w.cust || leads != w.leads {
					t.Errorf("window %d, source %d, model %s: revenue %s conversions %s new %s cost %s customers %d leads %d, want %+v",
						c.window, src, m, rev, conv, nc, cost, cust, leads, w)
				}
			}
		}
	}
	for _, w := range []int{1, 2, 30} {
		q := roi.Query{Window: w, AsOf: asOf}
		a, err := roi.Load(ctx, conn, q, roi.Rollups)
		if err != nil {
			t.Fatal(err)
		}
		b, err := roi.Load(ctx, conn, q, roi.Raw)
		if err != nil {
			t.Fatal(err)
		}
		if d := DiffTotals(a, b); d != "" {
			t.Errorf("window %d: rollups vs raw: %s", w, d)
		}
	}
}

func TestDiffTotals(t *testing.T) {
	d := decimal.RequireFromString
	a := []roi.Totals{{PartnerID: "p1", Model: "linear", Revenue: d("1.5"), Cost: d("2")}}
	b := []roi.Totals{{PartnerID: "p1", Model: "linear", Revenue: d("1.5000"), Cost: d("2.0000")}}
	if s := DiffTotals(a, b); s != "" {
		t.Fatalf("equal values at different exponents: %s", s)
	}
	b[0].Cost = d("2.0001")
	if s := DiffTotals(a, b); s != "row 0 (partner p1, model linear): cost 2 vs 2.0001" {
		t.Fatalf("got %q", s)
	}
	if s := DiffTotals(a, nil); s != "1 rows vs 0" {
		t.Fatalf("got %q", s)
	}
}
