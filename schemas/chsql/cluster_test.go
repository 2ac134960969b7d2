package chsql_test

import (
	"strings"
	"testing"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// TestOnClusterRewritesEveryMigration: every statement of every migration
// (and the registry's DDL) has a cluster form; tables become Replicated
// local tables with a Distributed table of the same name, and every
// reference to a schema table is qualified with the database.
func TestOnClusterRewritesEveryMigration(t *testing.T) {
	ms, err := chsql.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	all := []string{chsql.CreateMigrationsTable.SQL}
	for _, m := range ms {
		all = append(all, m.Statements...)
	}
	tables := chsql.SchemaTables(all)
	for _, want := range []string{"touchpoints", "roi_daily", "schema_migrations", "partner_roi_daily", "touchpoints_by_user_src_mv"} {
		if !tables[want] {
			t.Errorf("SchemaTables misses %s", want)
		}
	}
	c := chsql.ClusterTarget{Cluster: "partners", Database: "db1"}
	for _, st := range all {
		out, err := chsql.OnCluster(st, c, tables)
		if err != nil {
			t.Fatalf("%v\n%s", err, st)
		}
		for _, o := range out {
			if strings.HasPrefix(o, "INSERT") {
				continue
			}
			if !strings.Contains(o, " ON CLUSTER partners") {
				t.Errorf("no ON CLUSTER: %s", o)
			}
			if strings.Contains(o, "MergeTree") && !strings.Contains(o, "ReplicatedSummingMergeTree") &&
				!strings.Contains(o, "ReplicatedReplacingMergeTree") && !strings.Contains(o, "ReplicatedAggregatingMergeTree") {
				t.Errorf("not replicated: %s", o)
			}
		}
	}
	got, err := chsql.OnCluster(`CREATE TABLE IF NOT EXISTS roi_daily (
    model String, revenue Decimal(18, 4)
) ENGINE = SummingMergeTree()
ORDER BY (model)
SETTINGS index_granularity = 256`, c, tables)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`CREATE TABLE IF NOT EXISTS db1.roi_daily_local ON CLUSTER partners (
    model String, revenue Decimal(18, 4)
) ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db1/roi_daily_local', '{replica}')
ORDER BY (model)
SETTINGS index_granularity = 256`,
		`CREATE TABLE IF NOT EXISTS db1.roi_daily ON CLUSTER partners AS db1.roi_daily_local ENGINE = Distributed(partners, db1, roi_daily_local, 0)`,
	}
	if strings.Join(got, "\n;\n") != strings.Join(want, "\n;\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n;\n"), strings.Join(want, "\n;\n"))
	}
	got, err = chsql.OnCluster(`CREATE TABLE IF NOT EXISTS attributions (id String, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY id`, c, tables)
	if err != nil || !strings.Contains(got[0], `ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db1/attributions_local', '{replica}', version) ORDER BY id`) ||
		!strings.Contains(got[1], "cityHash64(user_id)") {
		t.Errorf("attributions: %v %q", err, got)
	}
	got, _ = chsql.OnCluster("CREATE MATERIALIZED VIEW IF NOT EXISTS touchpoints_by_user_src_mv TO touchpoints_by_user AS\nSELECT user_id FROM touchpoints", c, tables)
	if want := "CREATE MATERIALIZED VIEW IF NOT EXISTS db1.touchpoints_by_user_src_mv ON CLUSTER partners TO db1.touchpoints_by_user_local AS SELECT user_id FROM db1.touchpoints_local"; got[0] != want {
		t.Errorf("mv: got %q want %q", got[0], want)
	}
	if _, err := chsql.OnCluster("SELECT 1", c, tables); err == nil {
		t.Error("an unknown statement kind must be refused")
	}
	if _, err := chsql.OnCluster("DROP TABLE IF EXISTS x", chsql.ClusterTarget{Cluster: "a b", Database: "db"}, tables); err == nil {
		t.Error("a cluster name that is not an identifier must be refused")
	}
}
