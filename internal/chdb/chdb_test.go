package chdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/internal/config"
)

// envAddr names the ClickHouse (native protocol) the integration tests use.
// Unset, they try 127.0.0.1:9000 and skip if nothing answers; set, an
// unreachable server is a failure, so CI cannot silently skip them.
const envAddr = "PARTNERS_TEST_CLICKHOUSE"

// testDB connects to a fresh database partners_test_<random>, dropped when
// the test ends.
func testDB(t *testing.T) (config.ClickHouse, driver.Conn) {
	t.Helper()
	addr, set := os.LookupEnv(envAddr)
	if addr == "" {
		addr = "127.0.0.1:9000"
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err != nil {
		if !set {
			t.Skipf("no ClickHouse at %s (%v): start one with `bash deploy/local/clickhouse.sh start` or set %s", addr, err, envAddr)
		}
		t.Fatalf("%s=%s: ClickHouse unreachable: %v", envAddr, addr, err)
	} else {
		c.Close()
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	cfg := config.ClickHouse{
		Addr:        []string{addr},
		Database:    "partners_test_" + hex.EncodeToString(b[:]),
		Username:    "default",
		DialTimeout: 5 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Database, err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := DropDatabase(ctx, cfg); err != nil {
			t.Errorf("drop %s: %v", cfg.Database, err)
		}
	})
	return cfg, conn
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func allVersions(t *testing.T) []uint32 {
	t.Helper()
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no embedded migrations")
	}
	var vs []uint32
	for _, m := range ms {
		vs = append(vs, m.Version)
	}
	return vs
}

func TestMigrateAppliesAll(t *testing.T) {
	t.Parallel()
	cfg, conn := testDB(t)
	ctx := ctxFor(t)
	v, err := ServerVersion(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ClickHouse server version %s", v)

	done, err := Migrate(ctx, conn, testLogger(t))
	if err != nil {
		t.Fatalf("migrate on ClickHouse %s: %v", v, err)
	}
	if want := allVersions(t); !slices.Equal(done, want) {
		t.Errorf("applied %v, want %v", done, want)
	}
	var recorded uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM schema_migrations FINAL").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if int(recorded) != len(done) {
		t.Errorf("schema_migrations has %d rows, want %d", recorded, len(done))
	}
	for table := range rawTables {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?",
			cfg.Database, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("table %s.%s not created", cfg.Database, table)
		}
	}
}

func TestMigrateTwiceAppliesNothing(t *testing.T) {
	t.Parallel()
	_, conn := testDB(t)
	ctx := ctxFor(t)
	log := testLogger(t)
	first, err := Migrate(ctx, conn, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) == 0 {
		t.Fatal("first run applied nothing")
	}
	second, err := Migrate(ctx, conn, log)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	if len(second) != 0 {
		t.Errorf("second run applied %v, want nothing", second)
	}
	var recorded uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM schema_migrations").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if int(recorded) != len(first) {
		t.Errorf("schema_migrations has %d rows after two runs, want %d", recorded, len(first))
	}
}

// TestMigrationsRerunnable replays every statement after a full migration:
// a run interrupted before it was recorded must be completable.
func TestMigrationsRerunnable(t *testing.T) {
	t.Parallel()
	_, conn := testDB(t)
	ctx := ctxFor(t)
	if _, err := Migrate(ctx, conn, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for i, st := range m.Statements {
			// An ADD COLUMN whose column exists counts as applied (Migrate).
			if err := conn.Exec(ctx, st); err != nil && !columnExists(st, err) {
				t.Errorf("%04d_%s statement %d is not re-runnable: %v", m.Version, m.Name, i+1, err)
			}
		}
	}
}

// rawTables lists every column of the raw tables of 0001_raw_tables.sql (and
// the Kafka positions 0204 adds), in table order. The insert test names all of them, and checks the list against
// system.columns so a column added without a test fails here.
var rawTables = map[string][]string{
	"touchpoints": {"id", "user_id", "partner_id", "source", "utm_source", "utm_medium", "utm_campaign",
		"referrer", "region", "trace_id", "occurred_at", "ingested_at", "src_topic", "src_partition", "src_offset"},
	"conversions": {"id", "user_id", "kind", "amount", "currency", "amount_base", "new_customer", "refund_of",
		"occurred_at", "ingested_at", "src_topic", "src_partition", "src_offset"},
	"costs": {"id", "partner_id", "amount", "currency", "amount_base", "category", "occurred_at", "ingested_at",
		"src_topic", "src_partition", "src_offset"},
	"webhook_deliveries": {"id", "delivery_id", "tenant_id", "endpoint_id", "event_id", "event_type", "attempt",
		"status_code", "outcome", "latency_ms", "error", "reason", "trace_id", "attempted_at", "ingested_at"},
}

func TestRawTablesBatchInsert(t *testing.T) {
	t.Parallel()
	cfg, conn := testDB(t)
	ctx := ctxFor(t)
	if _, err := Migrate(ctx, conn, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	ingested := at.Add(time.Minute)
	d := decimal.RequireFromString

	tests := []struct {
		table string
		rows  [][]any // in rawTables order
	}{
		{"touchpoints", [][]any{
			{"tp_1", "usr_77", "ten_acme", "utm", "acme", "affiliate", "spring", "", "eu-west-1",
				"4bf92f3577b34da6a3ce929d0e0e4736", at, ingested, "partners.touchpoints.v1", int32(2), int64(41)},
			{"tp_2", "usr_12", "ten_globex", "referral_header", "", "", "", "https://globex.example/", "us-east-1",
				"", at.AddDate(0, -1, 0), ingested, "", int32(-1), int64(-1)}, // another month: another partition
		}},
		{"conversions", [][]any{
			{"conv_1", "usr_77", "purchase", d("129.9"), "EUR", d("140.2931"), uint8(1), "", at, ingested, "partners.conversions.v1", int32(0), int64(7)},
			{"conv_2", "usr_77", "refund", d("-129.9"), "EUR", d("-140.2931"), uint8(0), "conv_1", at.Add(time.Hour), ingested, "partners.conversions.v1", int32(0), int64(8)},
			{"conv_3", "usr_12", "purchase", d("99999999999999.9999"), "USD", d("99999999999999.9999"), uint8(0), "", at, ingested, "", int32(-1), int64(-1)},
		}},
		{"costs", [][]any{
			{"cost_1", "ten_acme", d("12.99"), "EUR", d("14.0292"), "commission", at, ingested, "partners.costs.v1", int32(1), int64(3)},
			{"cost_2", "ten_globex", d("2500"), "USD", d("2500"), "", at, ingested, "", int32(-1), int64(-1)},
		}},
		{"webhook_deliveries", [][]any{
			{"msg_1/1", "msg_1", "ten_acme", "ep_1", "evt_1", "order.completed", uint16(1), uint16(503), "retry",
				float64(120.5), "503 Service Unavailable", "http_status", "4bf92f3577b34da6a3ce929d0e0e4736", at, ingested},
			{"msg_1/2", "msg_1", "ten_acme", "ep_1", "evt_1", "order.completed", uint16(2), uint16(200), "delivered",
				float64(83.25), "", "", "4bf92f3577b34da6a3ce929d0e0e4736", at.Add(2 * time.Second), ingested},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			cols := rawTables[tt.table]
			if got := columnsOf(t, ctx, conn, cfg.Database, tt.table); !slices.Equal(got, cols) {
				t.Fatalf("columns of %s: got %v, want %v (update rawTables and this test)", tt.table, got, cols)
			}
			insert := func(rows [][]any) {
				t.Helper()
				// Always name the columns: clickhouse-go v2 batches need it on 18.16.
				b, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s (%s)", tt.table, strings.Join(cols, ", ")))
				if err != nil {
					t.Fatalf("prepare: %v", err)
				}
				for _, r := range rows {
					if err := b.Append(r...); err != nil {
						t.Fatalf("append %v: %v", r, err)
					}
				}
				if err := b.Send(); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			insert(tt.rows)
			// A replayed batch: same ids, later ingested_at.
			replay := make([][]any, len(tt.rows))
			for i, r := range tt.rows {
				replay[i] = slices.Clone(r)
				replay[i][slices.Index(cols, "ingested_at")] = ingested.Add(time.Hour)
			}
			insert(replay)

			var raw, ids uint64
			if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), uniqExact(id) FROM %s", tt.table)).Scan(&raw, &ids); err != nil {
				t.Fatal(err)
			}
			if raw != uint64(2*len(tt.rows)) || ids != uint64(len(tt.rows)) {
				t.Errorf("count %d, uniqExact(id) %d; want %d rows and %d ids", raw, ids, 2*len(tt.rows), len(tt.rows))
			}

			got := readBack(t, ctx, conn, tt.table, cols, tt.rows[0])
			if len(got) != len(tt.rows) {
				t.Fatalf("FINAL returned %d rows, want %d (one per id)", len(got), len(tt.rows))
			}
			for i, want := range replay {
				for j := range want {
					if !equalValue(got[i][j], want[j]) {
						t.Errorf("row %d %s: got %v, want %v", i, cols[j], got[i][j], want[j])
					}
				}
			}
		})
	}
}

func columnsOf(t *testing.T, ctx context.Context, conn driver.Conn, db, table string) []string {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ? ORDER BY position", db, table)
	if err != nil {
		// system.columns has no position column before 19.x: keep the table order.
		rows, err = conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", db, table)
		if err != nil {
			t.Fatal(err)
		}
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// readBack selects every column with FINAL, ordered by id, scanning into
// values of the same Go types as sample.
func readBack(t *testing.T, ctx context.Context, conn driver.Conn, table string, cols []string, sample []any) [][]any {
	t.Helper()
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT %s FROM %s FINAL ORDER BY id", strings.Join(cols, ", "), table))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		ptrs := make([]any, len(sample))
		for i, s := range sample {
			ptrs[i] = reflect.New(reflect.TypeOf(s)).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := make([]any, len(ptrs))
		for i, p := range ptrs {
			row[i] = reflect.ValueOf(p).Elem().Interface()
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func equalValue(got, want any) bool {
	switch w := want.(type) {
	case decimal.Decimal:
		g, ok := got.(decimal.Decimal)
		return ok && g.Equal(w)
	case time.Time:
		g, ok := got.(time.Time)
		return ok && g.Equal(w)
	}
	return reflect.DeepEqual(got, want)
}

func TestColumnExists(t *testing.T) {
	add := "ALTER TABLE touchpoints\n    ADD COLUMN src_topic String DEFAULT ''"
	exists := func(code int32) error {
		return fmt.Errorf("wrapped: %w", &clickhouse.Exception{Code: code, Message: "Cannot add column src_topic: column with this name already exists"})
	}
	for _, tt := range []struct {
		name string
		st   string
		err  error
		want bool
	}{
		{"18.16", add, exists(44), true},
		{"20+", add, exists(15), true},
		{"cluster", "ALTER TABLE t ON CLUSTER partners ADD COLUMN a String", exists(15), true},
		{"other error of an ADD COLUMN", add, &clickhouse.Exception{Code: 60, Message: "Table doesn't exist"}, false},
		{"not an ADD COLUMN", "ALTER TABLE t DROP COLUMN a", exists(44), false},
		{"not an exception", add, errors.New("column already exists"), false},
	} {
		if got := columnExists(tt.st, tt.err); got != tt.want {
			t.Errorf("%s: columnExists = %v, want %v", tt.name, got, tt.want)
		}
	}
}
