package chsql_test

import (
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
	s.load(ctx)

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
	beforeRollups, beforeRaw, beforeView := load(roi.Rollups), load(roi.Raw), view()

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

	if got := load(roi.Rollups); !slices.EqualFunc(got, beforeRollups, totalsEqual) {
		t.Errorf("ROI from the rollups changed across the upgrade:\n before %+v\n after  %+v", beforeRollups, got)
	}
	if got := load(roi.Raw); !slices.EqualFunc(got, beforeRaw, totalsEqual) {
		t.Errorf("ROI from the raw tables changed across the upgrade:\n before %+v\n after  %+v", beforeRaw, got)
	}
	if got := view(); !slices.Equal(got, beforeView) {
		t.Errorf("partner_roi_daily changed across the upgrade:\n before %q\n after  %q", beforeView, got)
	}
	if !slices.EqualFunc(beforeRollups, beforeRaw, totalsEqual) {
		t.Errorf("rollups and raw tables disagree before the upgrade:\n rollups %+v\n raw     %+v", beforeRollups, beforeRaw)
	}
}

func totalsEqual(a, b roi.Totals) bool {
	return a.PartnerID == b.PartnerID && a.Model == b.Model && a.Revenue.Equal(b.Revenue) &&
		a.Conversions.Equal(b.Conversions) && a.NewCustomers.Equal(b.NewCustomers) && a.Customers == b.Customers &&
		a.Cost.Equal(b.Cost) && a.Leads == b.Leads
}
