package attribution_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
)

// snapshot renders every ROI row of the windows, from one source, as text:
// two snapshots are equal iff every figure is.
func snapshot(t *testing.T, e *env, src roi.Source, asOf time.Time, windows ...int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, w := range windows {
		tots, err := roi.Load(context.Background(), e.conn, roi.Query{Window: w, AsOf: asOf}, src)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range tots {
			m := roi.Metrics(tt)
			out[fmt.Sprintf("w%d/%s/%s", w, tt.PartnerID, tt.Model)] = fmt.Sprintf(
				"revenue=%s cost=%s conversions=%s new=%s leads=%d customers=%d roi=%s cpl=%s cac=%s ltv=%s ltv_cac=%s",
				tt.Revenue.StringFixed(2), tt.Cost.StringFixed(2), tt.Conversions.StringFixed(4), tt.NewCustomers.StringFixed(4),
				tt.Leads, tt.Customers, optFloat(m.ROI), optStr(m.CPL), optStr(m.CAC), optStr(m.LTV), optFloat(m.LTVCAC))
		}
	}
	return out
}

func expected(d Dataset, e *env, asOf time.Time, windows ...int) map[string]string {
	a := e.cfg.Partner.Attribution
	out := map[string]string{}
	for _, w := range windows {
		from, to := roi.Query{Window: w, AsOf: asOf}.Range()
		o := oracle(d, a.CurrencyRates, a.Lookback,
			a.TimeDecayHalfLife, from, to)
		for _, p := range o.partners() {
			for _, m := range oracleModels {
				r := o.row(p, m)
				out[fmt.Sprintf("w%d/%s/%s", w, p, m)] = fmt.Sprintf(
					"revenue=%s cost=%s conversions=%s new=%s leads=%d customers=%d roi=%s cpl=%s cac=%s ltv=%s ltv_cac=%s",
					r.revenue, r.cost, r.conversions, r.newCustomers, r.leads, r.customers, r.roi, r.cpl, r.cac, r.ltv, r.ltvCac)
			}
		}
	}
	return out
}

func diff(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	var bad []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			bad = append(bad, fmt.Sprintf("%s: missing, want %s", k, w))
		} else if g != w {
			bad = append(bad, fmt.Sprintf("%s:\n   got  %s\n   want %s", k, g, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			bad = append(bad, fmt.Sprintf("%s: unexpected %s", k, g))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 12 {
			bad = append(bad[:12], fmt.Sprintf("… and %d more", len(bad)-12))
		}
		t.Fatalf("%s: %d rows differ:\n%s", what, len(bad), strings.Join(bad, "\n"))
	}
}

func oracleDataset(now time.Time, prefix string) Dataset {
	return Generate(GenOptions{
		Seed: 42, Now: now, Days: 70, Partners: 4, Users: 120, MaxTouches: 5, MaxConvs: 3,
		RefundRate: 0.3, CostsPer: 12, IDPrefix: prefix,
	})
}

// TestOracle publishes a generated dataset (4 partners, overlapping and
// out-of-order touchpoints, refunds published in random order relative to
// their conversions, costs in three currencies across 70 days) and checks
// every ROI figure of every partner and model, for 7-, 30- and 90-day
// windows, from the rollups and from the raw tables, against the
// independent oracle — to the cent. Then it publishes everything again and
// checks that nothing moved.
func TestOracle(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	d := oracleDataset(now, "")
	want := expected(d, e, now, 7, 30, 90)
	if len(want) < 20 {
		t.Fatalf("dataset too small to mean anything: %d rows", len(want))
	}
	e.publishDataset(t, d)
	var proc *attribution.Processor
	stop, reg := e.startWith(t, nil, func(p *attribution.Processor) { proc = p })
	e.waitCaughtUp(t, 90*time.Second)
	diff(t, "rollups vs oracle", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	diff(t, "raw tables vs oracle", snapshot(t, e, roi.Raw, now, 7, 30, 90), want)
	rows := func() (n uint64) {
		if err := e.conn.QueryRow(context.Background(), "SELECT (SELECT count() FROM attributions) + (SELECT count() FROM touchpoints) + (SELECT count() FROM conversions) + (SELECT count() FROM costs)").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := rows()

	// Everything published twice: every record is recognised by its id,
	// nothing is written again, identical numbers.
	e.publishDataset(t, d)
	e.waitCaughtUp(t, 90*time.Second)
	diff(t, "rollups after duplicate publish", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	diff(t, "raw after duplicate publish", snapshot(t, e, roi.Raw, now, 7, 30, 90), want)
	if dup := metric(t, reg, "partners_attribution_records_total", map[string]string{"outcome": "duplicate"}); int(dup) != d.Len() {
		t.Errorf("%v records counted as duplicates, want all %d of the second publish", dup, d.Len())
	}
	if after := rows(); after != before {
		t.Errorf("the duplicate publish wrote %d raw rows", after-before)
	}

	// A replay of the topics from the start (the group's offsets reset):
	// every record is below the ledger's end offsets and skipped.
	stop()
	e.replayFromStart(t)
	_, reg = e.startWith(t, nil, func(p *attribution.Processor) { proc = p })
	e.waitCaughtUp(t, 90*time.Second)
	diff(t, "rollups after a replay", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	diff(t, "raw after a replay", snapshot(t, e, roi.Raw, now, 7, 30, 90), want)
	if n := metric(t, reg, "partners_attribution_records_total", map[string]string{"outcome": "replayed"}); int(n) != 2*d.Len() {
		t.Errorf("%v records skipped as replayed, want both publishes, %d", n, 2*d.Len())
	}
	if after := rows(); after != before {
		t.Errorf("the replay wrote %d raw rows", after-before)
	}
	checkDailyView(t, e, d, now)
	from, to := roi.Query{Window: 90, AsOf: now}.Range()
	if bad, err := proc.Reconcile(context.Background(), from, to); err != nil || len(bad) != 0 {
		t.Errorf("reconciliation: %v %v", bad, err)
	}
	t.Logf("%d expected ROI rows matched after duplicates and a replay", len(want))
}

// checkDailyView: the analysts' plain view partner_roi_daily, summed over a
// window, gives the oracle's revenue, conversions and cost (leads there are
// per day and are not summable).
func checkDailyView(t *testing.T, e *env, d Dataset, now time.Time) {
	t.Helper()
	from, to := roi.Query{Window: 30, AsOf: now}.Range()
	a := e.cfg.Partner.Attribution
	o := oracle(d, a.CurrencyRates, a.Lookback,
		a.TimeDecayHalfLife, from, to)
	rows, err := e.conn.Query(context.Background(), `SELECT partner_id, model, sum(revenue), sum(conversions), sum(cost)
		FROM partner_roi_daily WHERE day >= toDate(?) AND day <= toDate(?) GROUP BY partner_id, model`, from, to)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var p, m string
		var rev, conv, cost decimal.Decimal
		if err := rows.Scan(&p, &m, &rev, &conv, &cost); err != nil {
			t.Fatal(err)
		}
		want := o.row(p, m)
		if rev.StringFixed(2) != want.revenue || conv.StringFixed(4) != want.conversions || cost.StringFixed(2) != want.cost {
			t.Fatalf("partner_roi_daily %s/%s: revenue %s conversions %s cost %s, want %s %s %s", p, m,
				rev.StringFixed(2), conv.StringFixed(4), cost.StringFixed(2), want.revenue, want.conversions, want.cost)
		}
		n++
	}
	if n != len(o.partners())*len(oracleModels) {
		t.Fatalf("partner_roi_daily: %d partner×model rows, want %d", n, len(o.partners())*len(oracleModels))
	}
}
