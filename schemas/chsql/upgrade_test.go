package chsql_test

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// TestUpgradeFromPreviousRelease: an 18.16 database created by the previous
// release's migrations (with its data) upgrades with today's migrator and
// gives the same ROI as before, from the rollups and from the raw tables,
// and partner_roi_daily returns the same rows. testdata/release-2026-11 holds
// the previous release's migrations as shipped (main at 8f3c203): never edit them.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	s := &suite{t: t, ds: newDataset(time.Now())}
	addr := os.Getenv("PARTNERS_TEST_CLICKHOUSE")
	if addr == "" {
		t.Skip("PARTNERS_TEST_CLICKHOUSE unset (make test starts ClickHouse 18.16)")
	}
	e := openServer(t, "upgrade", addr)
	s.ref, s.engines = e, []engine{e}
	ctx := ctxFor(t)

	old, err := chsql.LoadMigrations(os.DirFS("testdata/release-2026-11"), ".")
	if err != nil {
		t.Fatal(err)
	}
	// What the previous release's migrator did: its own schema_migrations
	// table, every statement, one record per migration.
	if err := e.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version UInt32, name String, applied_at DateTime
	) ENGINE = ReplacingMergeTree ORDER BY version`); err != nil {
		t.Fatal(err)
	}
	for _, m := range old {
		for i, st := range m.Statements {
			if err := e.Exec(ctx, st); err != nil {
				t.Fatalf("previous release migration %04d_%s statement %d on %s: %v", m.Version, m.Name, i+1, e.Name(), err)
			}
		}
		if err := e.Insert(ctx, chsql.RecordMigration, [][]any{{m.Version, m.Name, time.Now().UTC().Truncate(time.Second)}}); err != nil {
			t.Fatal(err)
		}
	}
	s.covered = map[string]bool{}
	// The previous release's processor wrote rows without Kafka positions.
	s.loadRaw(ctx, previousInserts, func(st chsql.Statement) [][]any { return s.ds.previousRows(st) })

	q := roi.Query{Window: 30, AsOf: s.ds.day0}
	load := func(src roi.Source) []roi.Totals {
		t.Helper()
		got, err := roi.Load(ctx, e.conn, q, src)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Fatal("no ROI rows on the dataset")
		}
		return got
	}
	view := func() []string {
		t.Helper()
		rows, err := e.Query(ctx, "SELECT partner_id, model, day, revenue, conversions, new_customers, cost, leads FROM partner_roi_daily")
		if err != nil {
			t.Fatal(err)
		}
		return sortRows(rows)
	}
	// Before: the previous release's rollups (its own queries) and the raw
	// tables; after: roi_daily and the raw tables. All four must agree.
	from, to := q.Range()
	previousRollups := func() []string {
		t.Helper()
		var res [3][]string
		for i, sql := range []string{previousROIAttr, previousROICost, previousROILeads} {
			rows, err := e.Query(ctx, sql, from, to)
			if err != nil {
				t.Fatalf("previous release ROI query: %v\n%s", err, sql)
			}
			res[i] = sortRows(rows)
		}
		return roiRows(res[0], res[1], res[2], allModels)
	}
	rollupRows := func() []string {
		t.Helper()
		rows, err := e.Query(ctx, chsql.ROIRollup(chsql.ROIFilter{}).SQL, from, to)
		if err != nil {
			t.Fatal(err)
		}
		return roiRows(sortRows(rows), nil, nil, allModels)
	}
	beforeRollups, beforeRaw, beforeView := previousRollups(), load(roi.Raw), view()

	applied, err := chdb.Migrate(ctx, e.conn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("partners migrate on a previous-release database: %v", err)
	}
	all, _ := chsql.Migrations()
	var want []uint32
	for _, m := range all {
		if !slices.ContainsFunc(old, func(o chsql.Migration) bool { return o.Version == m.Version }) {
			want = append(want, m.Version)
		}
	}
	if !slices.Equal(applied, want) {
		t.Errorf("upgrade applied %v, want the migrations the previous release did not have: %v", applied, want)
	}
	if again, err := chdb.Migrate(ctx, e.conn, slog.New(slog.DiscardHandler)); err != nil || len(again) != 0 {
		t.Errorf("a second migrate applied %v (%v), want nothing", again, err)
	}

	if got := rollupRows(); !slices.Equal(got, beforeRollups) {
		t.Errorf("ROI from the rollups changed across the upgrade:\n before %q\n after  %q", beforeRollups, got)
	}
	if got := load(roi.Rollups); !slices.EqualFunc(got, beforeRaw, totalsEqual) {
		t.Errorf("ROI from roi_daily after the upgrade differs from the raw tables before it:\n before %+v\n after  %+v", beforeRaw, got)
	}
	if got := load(roi.Raw); !slices.EqualFunc(got, beforeRaw, totalsEqual) {
		t.Errorf("ROI from the raw tables changed across the upgrade:\n before %+v\n after  %+v", beforeRaw, got)
	}
	if got := view(); !slices.Equal(got, beforeView) {
		t.Errorf("partner_roi_daily changed across the upgrade:\n before %q\n after  %q", beforeView, got)
	}
	// The backfill of 0204 is what the reconciliation computes from the raw
	// tables, key by key.
	fromRaw, err := e.Query(ctx, chsql.ReconcileExpected.SQL, from, to)
	if err != nil {
		t.Fatal(err)
	}
	inRollup, err := e.Query(ctx, chsql.ReconcileActual.SQL, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(fromRaw) == 0 || !slices.Equal(sortRows(inRollup), sortRows(fromRaw)) {
		t.Errorf("roi_daily after the upgrade:\n got  %q\n want %q", sortRows(inRollup), sortRows(fromRaw))
	}
	if rawRows := rawROIRows(t, e, from, to); !slices.Equal(beforeRollups, rawRows) {
		t.Errorf("rollups and raw tables disagree before the upgrade:\n rollups %q\n raw     %q", beforeRollups, rawRows)
	}
}

var allModels = []string{"first_touch", "last_touch", "linear", "time_decay", "position_based"}

// rawROIRows is the raw tables' ROI of every partner and model, rendered as
// roiRows does.
func rawROIRows(t *testing.T, e *serverEngine, from, to string) []string {
	t.Helper()
	var res [3][]string
	for i, st := range []chsql.Statement{chsql.ROIRawAttribution(chsql.ROIFilter{}), chsql.ROIRawCost(chsql.ROIFilter{}), chsql.ROIRawLeads(chsql.ROIFilter{})} {
		rows, err := e.Query(context.Background(), st.SQL, from, to)
		if err != nil {
			t.Fatal(err)
		}
		res[i] = sortRows(rows)
	}
	return roiRows(res[0], res[1], res[2], allModels)
}

// The previous release's ROI queries over its per-conversion rollups
// (attribution_daily, costs_daily, leads_daily), as shipped.
const (
	previousROIAttr = `
SELECT partner_id, model, sum(r), sum(c), sum(n), uniqExactIf(u, c > 0 AND k != 'refund')
FROM (
  SELECT partner_id, model, conversion_id, anyMerge(user_id) AS u, anyMerge(kind) AS k,
         argMaxMerge(revenue) AS r, argMaxMerge(credit) AS c, argMaxMerge(new_customer) AS n
  FROM attribution_daily
  WHERE day >= toDate(?) AND day <= toDate(?)
  GROUP BY partner_id, model, day, conversion_id
)
GROUP BY partner_id, model`
	previousROICost = `
SELECT partner_id, sum(a)
FROM (
  SELECT partner_id, id, anyMerge(amount) AS a FROM costs_daily
  WHERE day >= toDate(?) AND day <= toDate(?)
  GROUP BY partner_id, day, id
)
GROUP BY partner_id`
	previousROILeads = `
SELECT partner_id, uniqExactMerge(users)
FROM leads_daily
WHERE day >= toDate(?) AND day <= toDate(?)
GROUP BY partner_id`
)

// previousInserts are the previous release's raw INSERTs (before the Kafka
// positions of 0204), in the order the suite writes them.
var previousInserts = []chsql.Statement{
	{Name: "previous.insert.touchpoints", SQL: `INSERT INTO touchpoints (id, user_id, partner_id, source, utm_source, utm_medium,
    utm_campaign, referrer, region, trace_id, occurred_at, ingested_at)`},
	{Name: "previous.insert.conversions", SQL: `INSERT INTO conversions (id, user_id, kind, amount, currency, amount_base,
    new_customer, refund_of, occurred_at, ingested_at)`},
	{Name: "previous.insert.costs", SQL: `INSERT INTO costs (id, partner_id, amount, currency, amount_base, category,
    occurred_at, ingested_at)`},
	chsql.InsertAttributions,
	{Name: "previous.insert.deliveries", SQL: `INSERT INTO webhook_deliveries (id, delivery_id, tenant_id, endpoint_id, event_id, event_type,
    attempt, status_code, outcome, latency_ms, error, trace_id, attempted_at)`},
}

// previousRows are the dataset's rows for a previous-release INSERT: the
// raw rows without their positions, the attempts without their reason
// (0205).
func (d dataset) previousRows(st chsql.Statement) [][]any {
	if st.Name == "previous.insert.deliveries" {
		var out [][]any
		for _, r := range d.rows[chsql.InsertDeliveries] {
			out = append(out, append(slices.Clone(r[:11]), r[12:]...))
		}
		return out
	}
	cur := map[string]chsql.Statement{
		"previous.insert.touchpoints": chsql.InsertTouchpoints,
		"previous.insert.conversions": chsql.InsertConversions,
		"previous.insert.costs":       chsql.InsertCosts,
	}[st.Name]
	if cur.Name == "" {
		return d.rows[st]
	}
	var out [][]any
	for _, r := range d.rows[cur] {
		out = append(out, r[:len(r)-3])
	}
	return out
}

func totalsEqual(a, b roi.Totals) bool {
	return a.PartnerID == b.PartnerID && a.Model == b.Model && a.Revenue.Equal(b.Revenue) &&
		a.Conversions.Equal(b.Conversions) && a.NewCustomers.Equal(b.NewCustomers) && a.Customers == b.Customers &&
		a.Cost.Equal(b.Cost) && a.Leads == b.Leads
}
