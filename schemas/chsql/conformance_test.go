package chsql_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas/chsql"
	"github.com/partners-engine/partners-engine/schemas/chsql/chsqltest"
)

// The conformance suite runs the whole SQL surface — every migration, every
// registry statement with bound sample parameters, every Grafana dashboard
// query with its macros expanded, every SQL example in the documentation —
// on ClickHouse 18.16 (the reference, through clickhouse-go exactly as the
// code sends it), on an 18.16 server in a non-UTC zone, and on current
// ClickHouse engines through chDB (each in UTC and in a non-UTC zone), over
// one fixed dataset, and checks that every engine gives the reference's
// rows.
//
// Environment (make test sets all three):
//
//	PARTNERS_TEST_CLICKHOUSE     the reference 18.16 server (UTC)
//	PARTNERS_TEST_CLICKHOUSE_TZ  an 18.16 server whose <timezone> is not UTC
//	PARTNERS_TEST_CHDB           ':'-separated pythons of chDB virtualenvs (deploy/local/chdb.sh pythons)

const repoRoot = "../.."

// chdbZones: every chDB engine runs twice, in UTC and in the zone given here
// (by its position in PARTNERS_TEST_CHDB), so old and new engines are both
// checked off UTC.
var chdbZones = []string{"America/Los_Angeles", "Asia/Kolkata", "Pacific/Chatham"}

type suite struct {
	t       *testing.T
	ref     *serverEngine
	engines []engine // ref first
	ds      dataset
	covered map[string]bool
	results map[string][]string // what the reference returned, by item
}

func newSuite(t *testing.T) *suite {
	t.Helper()
	addr, set := os.LookupEnv("PARTNERS_TEST_CLICKHOUSE")
	if addr == "" {
		addr = "127.0.0.1:9000"
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		if !set {
			t.Skipf("no ClickHouse at %s and PARTNERS_TEST_CLICKHOUSE unset (make test starts one)", addr)
		}
		t.Fatalf("PARTNERS_TEST_CLICKHOUSE=%s unreachable: %v", addr, err)
	} else {
		c.Close()
	}
	s := &suite{t: t, ds: newDataset(time.Now()), covered: map[string]bool{}, results: map[string][]string{}}
	s.ref = openServer(t, "reference", addr)
	s.engines = append(s.engines, s.ref)
	if tzAddr := os.Getenv("PARTNERS_TEST_CLICKHOUSE_TZ"); tzAddr != "" {
		e := openServer(t, "non-UTC", tzAddr)
		if e.tz.String() == "UTC" {
			t.Fatalf("PARTNERS_TEST_CLICKHOUSE_TZ=%s: server zone is UTC; the suite needs one configured to another zone", tzAddr)
		}
		s.engines = append(s.engines, e)
	} else if set {
		t.Fatal("PARTNERS_TEST_CLICKHOUSE is set but PARTNERS_TEST_CLICKHOUSE_TZ is not: make test starts a non-UTC 18.16 server")
	}
	pythons := chdbPythons(t)
	if len(pythons) == 0 {
		if set {
			t.Fatal("no chDB engine: PARTNERS_TEST_CHDB unset and none in .local/chdb (run bash deploy/local/chdb.sh install)")
		}
		t.Skip("no chDB engine (bash deploy/local/chdb.sh install)")
	}
	for i, py := range pythons {
		s.engines = append(s.engines, startCHDB(t, py, "UTC"), startCHDB(t, py, chdbZones[i%len(chdbZones)]))
	}
	return s
}

func chdbPythons(t *testing.T) []string {
	if env := os.Getenv("PARTNERS_TEST_CHDB"); env != "" {
		var out []string
		for _, p := range strings.Split(env, ":") {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("PARTNERS_TEST_CHDB: %v", err)
			}
			out = append(out, p)
		}
		return out
	}
	found, _ := filepath.Glob(filepath.Join(repoRoot, ".local/chdb/*/bin/python"))
	slices.Sort(found)
	slices.Reverse(found) // newest engine first
	return found
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// migrate applies every migration: on servers with the project's migrator
// (internal/chdb, what `partners migrate` runs), on chDB statement by
// statement, recording each applied version the way the migrator does.
func (s *suite) migrate(ctx context.Context) {
	ms, err := chsql.Migrations()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, e := range s.engines {
		switch e := e.(type) {
		case *serverEngine:
			if _, err := chdb.Migrate(ctx, e.conn, slog.New(slog.DiscardHandler)); err != nil {
				s.t.Fatalf("%s: %v", e.Name(), err)
			}
		default:
			if err := e.Exec(ctx, chsql.CreateMigrationsTable.SQL); err != nil {
				s.t.Fatalf("%s: %s: %v", e.Name(), chsql.CreateMigrationsTable.Name, err)
			}
			for _, m := range ms {
				for i, st := range m.Statements {
					if err := e.Exec(ctx, st); err != nil {
						s.t.Fatalf("%s: migration %04d_%s statement %d: %v\n%s", e.Name(), m.Version, m.Name, i+1, err, st)
					}
				}
				row := [][]any{{m.Version, m.Name, s.ds.day0}}
				if err := e.Insert(ctx, chsql.RecordMigration, row); err != nil {
					s.t.Fatalf("%s: %s: %v", e.Name(), chsql.RecordMigration.Name, err)
				}
			}
		}
	}
	for _, st := range []chsql.Statement{chsql.CreateMigrationsTable, chsql.RecordMigration} {
		s.covered[st.Name] = true
	}
}

// load writes the dataset through the registry's INSERT statements: each
// batch, then a replay of every other row as a separate INSERT (a Kafka
// replay). Current engines collapse duplicates inside one block on insert
// (optimize_on_insert) and 18.16 does not, and background merges may
// collapse them across blocks at any time; so on every other engine every
// table is then merged (OPTIMIZE … FINAL). A query whose answer depends on
// what has been merged differs between the engines and fails the suite.
func (s *suite) load(ctx context.Context) {
	s.loadRaw(ctx, inserts, func(st chsql.Statement) [][]any { return s.ds.rows[st] })
	s.loadRollup(ctx)
	s.optimize(ctx)
}

// loadRaw writes each statement's rows, then a replay of every other row as
// a separate INSERT (a Kafka replay).
func (s *suite) loadRaw(ctx context.Context, sts []chsql.Statement, rows func(chsql.Statement) [][]any) {
	for _, st := range sts {
		rows := rows(st)
		var replay [][]any
		for i := 0; i < len(rows); i += 2 {
			replay = append(replay, rows[i])
		}
		for _, e := range s.engines {
			for _, batch := range [][][]any{rows, replay} {
				if err := e.Insert(ctx, st, batch); err != nil {
					s.t.Fatalf("%s: %s: %v", e.Name(), st.Name, err)
				}
			}
		}
		s.covered[st.Name] = true
	}
}

// loadRollup fills roi_daily: it is written by the processor, not by views,
// so it is rebuilt from the raw rows (what migration 0204 does to an
// existing database), then gets the processor's kind of INSERTs
// (corrections, ledger rows).
func (s *suite) loadRollup(ctx context.Context) {
	for i, e := range s.engines {
		rebuild := []string{chsql.TruncateRollup.SQL, chsql.RebuildRollup.SQL}
		if i%2 == 1 {
			// Every other engine rebuilds in two slices of partners: the
			// same rows (the comparison checks it).
			rebuild = []string{chsql.TruncateRollup.SQL, sliceSQL(2, 0), sliceSQL(2, 1)}
		}
		for _, sql := range rebuild {
			if err := e.Exec(ctx, sql); err != nil {
				s.t.Fatalf("%s: %v\n%s", e.Name(), err, sql)
			}
		}
		for _, rows := range s.ds.rollup {
			if err := e.Insert(ctx, chsql.InsertRollup, rows); err != nil {
				s.t.Fatalf("%s: %s: %v", e.Name(), chsql.InsertRollup.Name, err)
			}
		}
	}
	for _, st := range []chsql.Statement{chsql.TruncateRollup, chsql.RebuildRollup, chsql.RebuildRollupSlice, chsql.InsertRollup} {
		s.covered[st.Name] = true
	}
}

// sliceSQL is RebuildRollupSlice with its bound integers written in.
func sliceSQL(m, r int) string {
	sql := chsql.RebuildRollupSlice.SQL
	for strings.Contains(sql, "% ? = ?") {
		sql = strings.Replace(sql, "% ? = ?", fmt.Sprintf("%% %d = %d", m, r), 1)
	}
	return sql
}

// optimize merges every table on every other engine.
func (s *suite) optimize(ctx context.Context) {
	for i, e := range s.engines {
		if i%2 == 0 {
			continue
		}
		tables, err := e.Query(ctx, "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree' ORDER BY name")
		if err != nil {
			s.t.Fatalf("%s: list tables: %v", e.Name(), err)
		}
		for _, tb := range tables {
			if err := e.Exec(ctx, "OPTIMIZE TABLE "+tb[0]+" FINAL"); err != nil {
				s.t.Fatalf("%s: optimize %s: %v", e.Name(), tb[0], err)
			}
		}
	}
}

// compare runs one SELECT on every engine and checks every engine returns
// the reference's rows. The reference binds args with clickhouse-go; the
// others get the text it sent.
func (s *suite) compare(ctx context.Context, item, sql string, args []any, wantRows bool) {
	s.t.Helper()
	text, err := s.ref.boundText(ctx, sql, args...)
	if err != nil {
		s.t.Errorf("%s on %s: %v\n%s", item, s.ref.Name(), err, sql)
		return
	}
	var want []string
	for i, e := range s.engines {
		q := text
		if _, server := e.(*serverEngine); server {
			q = sql // a server binds for itself (its own zone)
		}
		rows, err := e.Query(ctx, q, args...)
		if err != nil {
			s.t.Errorf("%s on %s: %v\n%s", item, e.Name(), err, q)
			continue
		}
		got := sortRows(rows)
		if i == 0 {
			want = got
			s.results[item] = got
			if wantRows && len(got) == 0 {
				s.t.Errorf("%s returns no rows on the dataset: extend the dataset (dataset_test.go) so the comparison means something", item)
			}
			continue
		}
		if !slices.Equal(got, want) {
			s.t.Errorf("%s: %s differs from %s\n got  %q\n want %q\n%s", item, e.Name(), s.ref.Name(), got, want, q)
		}
	}
}

func TestConformance(t *testing.T) {
	s := newSuite(t)
	ctx := ctxFor(t)
	var names []string
	for _, e := range s.engines {
		names = append(names, e.Name())
	}
	s.migrate(ctx)
	s.load(ctx)

	samples := s.ds.sampleArgs()
	counts := map[string]int{}
	for _, st := range chsql.All() {
		switch {
		case st.Name == chsql.ServerVersion.Name:
			// Differs by design; run it everywhere, compare nothing.
			for _, e := range s.engines {
				if _, err := e.Query(ctx, st.SQL); err != nil {
					t.Errorf("%s on %s: %v", st.Name, e.Name(), err)
				}
			}
			s.covered[st.Name] = true
		case strings.Contains(st.SQL, "{database}"):
			for _, e := range s.engines {
				sql, err := st.WithDatabase("conformance_scratch_" + testenv.RandomID())
				if err != nil {
					t.Fatal(err)
				}
				if err := e.Exec(ctx, sql); err != nil {
					t.Errorf("%s on %s: %v", st.Name, e.Name(), err)
				}
			}
			s.covered[st.Name] = true
		case isSelect(st.SQL):
			args, ok := samples[st.Name]
			if !ok {
				t.Errorf("statement %s has no sample arguments in dataset_test.go", st.Name)
				continue
			}
			s.compare(ctx, "statement "+st.Name, st.SQL, args, true)
			s.covered[st.Name] = true
			counts["statements"]++
		}
	}
	for _, st := range chsql.All() {
		if !s.covered[st.Name] {
			t.Errorf("statement %s is not exercised by the conformance suite", st.Name)
		}
	}

	// Rollups and raw tables must agree (the rollups are the serving path):
	// key by key, and as the ROI figures of every filter.
	if r, w := s.results["statement "+chsql.ReconcileActual.Name], s.results["statement "+chsql.ReconcileExpected.Name]; !slices.Equal(r, w) {
		t.Errorf("roi_daily (%s) = %q,\n but the raw tables (%s) = %q", chsql.ReconcileActual.Name, r, chsql.ReconcileExpected.Name, w)
	}
	for _, f := range []chsql.ROIFilter{{}, {Partner: true}, {Model: true}, {Partner: true, Model: true}} {
		ms := []string{"first_touch", "last_touch", "linear", "time_decay", "position_based"}
		if f.Model {
			ms = []string{"linear"}
		}
		rollup := roiRows(s.results["statement "+chsql.ROIRollup(f).Name], nil, nil, ms)
		raw := roiRows(s.results["statement "+chsql.ROIRawAttribution(f).Name], s.results["statement "+chsql.ROIRawCost(f).Name],
			s.results["statement "+chsql.ROIRawLeads(f).Name], ms)
		if !slices.Equal(rollup, raw) {
			t.Errorf("%s = %q,\n but the raw tables give %q", chsql.ROIRollup(f).Name, rollup, raw)
		}
	}
	// A few figures checked by hand against the dataset, so that "all engines
	// agree" cannot mean "all engines are equally wrong".
	for item, want := range map[string][]string{
		"statement " + chsql.ROIRawAttribution(chsql.ROIFilter{Partner: true, Model: true}).Name: {
			partnerB + " | linear | 56.6 | 0.5 | 0.5 | 2"},
		"statement " + chsql.ROIRawCost(chsql.ROIFilter{}).Name: {
			partnerA + " | 25", partnerC + " | 5", partnerB + " | 10.8"},
		"statement " + chsql.ROIRollup(chsql.ROIFilter{Partner: true, Model: true}).Name: {
			partnerB + " | linear | 56.6 | 0.5 | 0.5 | 2 | 10.8 | 3"},
		"statement " + chsql.LedgerState.Name: {
			"#params | lookback=720h0m0s half_life=168h0m0s split=2 | 1",
			"partners.conversions.v1/1 |  | 3", "partners.touchpoints.v1/0 |  | 12"},
	} {
		if got := s.results[item]; !slices.Equal(got, want) {
			t.Errorf("%s on the reference = %q, want %q", item, got, want)
		}
	}

	for _, q := range dashboardQueries(t, s.ds) {
		s.compare(ctx, q.where, q.sql, nil, true)
		counts["dashboard queries"]++
	}
	for _, q := range docExamples(t) {
		s.compare(ctx, q.where, q.sql, nil, true)
		counts["documentation examples"]++
	}
	if counts["dashboard queries"] == 0 || counts["documentation examples"] == 0 {
		t.Errorf("found %v: the suite lost track of the dashboards or the docs", counts)
	}
	ms, _ := chsql.Migrations()
	t.Logf("SQL conformance: %d migrations, %d statements, %d dashboard queries, %d documentation examples on: %s",
		len(ms), counts["statements"], counts["dashboard queries"], counts["documentation examples"], strings.Join(names, "; "))
}

// roiRows renders ROI results as roi.Load does: every partner that appears
// (in any of the results) with every model of ms, missing figures zero.
// With only attr given, attr holds the rollup's full rows (partner, model,
// revenue, conversions, new customers, customers, cost, leads); otherwise
// the raw attribution (partner, model, revenue, conversions, new
// customers, customers), cost (partner, cost) and leads (partner, leads)
// rows.
func roiRows(attr, cost, leads []string, ms []string) []string {
	partners := map[string]bool{}
	figures := map[string]string{} // partner | model → figures
	perPartner := map[string]string{}
	for _, r := range attr {
		f := strings.Split(r, " | ")
		partners[f[0]] = true
		figures[f[0]+" | "+f[1]] = strings.Join(f[2:6], " | ")
		if len(f) == 8 {
			perPartner[f[0]] = strings.Join(f[6:], " | ")
		}
	}
	costs, leadsOf := map[string]string{}, map[string]string{}
	for _, r := range cost {
		f := strings.Split(r, " | ")
		partners[f[0]], costs[f[0]] = true, f[1]
	}
	for _, r := range leads {
		f := strings.Split(r, " | ")
		partners[f[0]], leadsOf[f[0]] = true, f[1]
	}
	var out []string
	for p := range partners {
		for _, m := range ms {
			fig, ok := figures[p+" | "+m]
			if !ok {
				fig = "0 | 0 | 0 | 0"
			}
			pp, ok := perPartner[p]
			if !ok {
				c, l := costs[p], leadsOf[p]
				if c == "" {
					c = "0"
				}
				if l == "" {
					l = "0"
				}
				pp = c + " | " + l
			}
			out = append(out, p+" | "+m+" | "+fig+" | "+pp)
		}
	}
	slices.Sort(out)
	return out
}

func isSelect(sql string) bool {
	u := strings.ToUpper(strings.TrimSpace(sql))
	return strings.HasPrefix(u, "SELECT") || strings.HasPrefix(u, "WITH")
}

// --- dashboards --------------------------------------------------------------

type surfaceQuery struct{ where, sql string }

// dashboardQueries returns every ClickHouse query of the Grafana dashboards
// (panels and template variables) with the macros expanded the way the
// grafana-clickhouse-datasource plugin does (pkg/macros: $__fromTime is
// toDateTime(<unix seconds>), $__dateFilter(c) compares c with
// toDate('<UTC day>')) and the variables set to dataset values.
func dashboardQueries(t *testing.T, ds dataset) []surfaceQuery {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "deploy/grafana/dashboards/*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards found (%v)", err)
	}
	from, to := ds.day0.AddDate(0, 0, -30), ds.day0.Add(24*time.Hour-time.Second)
	var out []surfaceQuery
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Datasource struct{ Type string } `json:"datasource"`
					RawSQL     string                `json:"rawSql"`
				} `json:"targets"`
			} `json:"panels"`
			Templating struct {
				List []struct {
					Name       string                `json:"name"`
					Datasource struct{ Type string } `json:"datasource"`
					Query      json.RawMessage       `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		for _, p := range d.Panels {
			for i, tg := range p.Targets {
				if tg.Datasource.Type != "grafana-clickhouse-datasource" || tg.RawSQL == "" {
					continue
				}
				out = append(out, surfaceQuery{fmt.Sprintf("dashboard %s panel %q query %d", name, p.Title, i+1), expandGrafana(t, tg.RawSQL, from, to)})
			}
		}
		for _, v := range d.Templating.List {
			var q string
			if v.Datasource.Type != "grafana-clickhouse-datasource" || json.Unmarshal(v.Query, &q) != nil || q == "" {
				continue
			}
			out = append(out, surfaceQuery{fmt.Sprintf("dashboard %s variable %q", name, v.Name), expandGrafana(t, q, from, to)})
		}
	}
	return out
}

func expandGrafana(t *testing.T, sql string, from, to time.Time) string {
	out, err := chsqltest.ExpandGrafana(sql, from, to, map[string]string{
		"${model}":               "linear",
		"${partner:singlequote}": fmt.Sprintf("'%s','%s','%s'", partnerA, partnerB, partnerC),
		"${tenant:singlequote}":  fmt.Sprintf("'%s','%s'", partnerA, partnerB),
	})
	if err != nil {
		t.Errorf("%v (teach chsqltest.ExpandGrafana): %s", err, sql)
	}
	return out
}

// --- documentation -----------------------------------------------------------

// docExamples returns every statement of every ```sql block in the
// repository's Markdown.
func docExamples(t *testing.T) []surfaceQuery {
	t.Helper()
	var out []surfaceQuery
	err := filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".local" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".md") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		for i, block := range sqlBlocks(string(b)) {
			for j, st := range chsql.Split(block) {
				out = append(out, surfaceQuery{fmt.Sprintf("%s sql block %d statement %d", rel, i+1, j+1), st})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sqlBlocks(md string) []string {
	var out []string
	var cur []string
	in := false
	for _, line := range strings.Split(md, "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case !in && trim == "```sql":
			in, cur = true, nil
		case in && strings.HasPrefix(trim, "```"):
			in = false
			out = append(out, strings.Join(cur, "\n"))
		case in:
			cur = append(cur, line)
		}
	}
	return out
}
