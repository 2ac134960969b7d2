package attribution_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// publishInChunks publishes d's records in n parts, waiting for each to be
// committed, so faults meet many batches.
func (e *env) publishInChunks(t *testing.T, d Dataset, n int) {
	t.Helper()
	recs, err := d.Records(e.names)
	if err != nil {
		t.Fatal(err)
	}
	size := (len(recs) + n - 1) / n
	for i := 0; i < len(recs); i += size {
		e.publish(t, recs[i:min(i+size, len(recs))])
		e.waitCaughtUp(t, 90*time.Second)
	}
}

// TestLostRollupAcks: the rollup INSERT lands but the processor sees an
// error (a connection lost while the server commits: the outcome unknown to
// the client), three times. Each time the processor reloads the ledger
// before its next batch, finds the batch counted, and does not count it
// again: the rollups equal the oracle to the cent.
func TestLostRollupAcks(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	d := oracleDataset(now, "lost-")
	want := expected(d, e, now, 7, 30, 90)
	var proc *attribution.Processor
	_, reg := e.startWith(t, nil, func(p *attribution.Processor) {
		proc = p
		attribution.LoseRollupAcks(p, 3)
	})
	e.publishInChunks(t, d, 6)
	if n := strings.Count(e.log.String(), "connection lost after the rollup insert was sent"); n != 3 {
		t.Fatalf("%d lost acknowledgements logged, want 3", n)
	}
	if n := metric(t, reg, "partners_attribution_batch_retries_total", nil); n < 3 {
		t.Fatalf("%v batch retries, want at least 3", n)
	}
	diff(t, "rollups after lost acknowledgements", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	diff(t, "raw after lost acknowledgements", snapshot(t, e, roi.Raw, now, 7, 30, 90), want)
	from, to := roi.Query{Window: 90, AsOf: now}.Range()
	if bad, err := proc.Reconcile(context.Background(), from, to); err != nil || len(bad) != 0 {
		t.Errorf("reconciliation: %v %v", bad, err)
	}
}

// TestClickHouseRestartMidInsert kills the processor's ClickHouse (a private
// instance) with SIGKILL twice while batches are being inserted and starts
// it again: inserts in flight die with it (parts half written are dropped
// at start, committed ones stay), the processor retries, resolves what
// landed from the ledger, and the rollups equal the oracle to the cent.
func TestClickHouseRestartMidInsert(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a ClickHouse server")
	}
	ch := startOwnClickHouse(t)
	cfg := testenv.Config(t)
	cfg.ClickHouse.Addr = []string{ch.addr}
	cfg.Partner.Attribution.Batch.Size = 300
	brokers, cl := testenv.Kafka(t, cfg)
	conn := testenv.ClickHouse(t, cfg)
	e := &env{cfg: cfg, brokers: brokers, cl: cl, conn: conn, names: namesOf(cfg), log: &testenv.LogBuffer{}}
	now := time.Now().UTC()
	d := faultDataset(now, 4_000)
	want := expected(d, e, now, 30, 60)
	_, reg := e.startWith(t, nil)
	e.publishDataset(t, d)
	for kill := 1; kill <= 2; kill++ {
		before := countRows(t, e)
		testenv.Eventually(t, 60*time.Second, "the processor inserting", func() bool { return countRows(t, e) > before })
		ch.kill9()
		t.Logf("ClickHouse kill -9 #%d with %d attribution rows in", kill, before)
		time.Sleep(500 * time.Millisecond)
		ch.script("start")
	}
	e.waitCaughtUp(t, 120*time.Second)
	if n := metric(t, reg, "partners_attribution_batch_retries_total", nil); n == 0 {
		t.Fatal("no batch failed while ClickHouse was killed: the test proves nothing")
	} else {
		t.Logf("%v batch retries across the restarts", n)
	}
	diff(t, "rollups after ClickHouse restarts mid-insert", snapshot(t, e, roi.Rollups, now, 30, 60), want)
	diff(t, "raw after ClickHouse restarts mid-insert", snapshot(t, e, roi.Raw, now, 30, 60), want)
}

// kill9 sends SIGKILL to the private server.
func (c *ownClickHouse) kill9() {
	c.t.Helper()
	var dir string
	for _, kv := range c.env {
		if v, ok := strings.CutPrefix(kv, "PARTNERS_CLICKHOUSE_DIR="); ok {
			dir = v
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "clickhouse-server.pid"))
	if err != nil {
		c.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconcileFindsTampering: after a clean run the reconciliation finds
// nothing; a row written into roi_daily behind the processor's back is
// reported — metric and log line naming the key — until it is reversed. The
// periodic loop runs on its own.
func TestReconcileFindsTampering(t *testing.T) {
	e := newEnv(t)
	e.cfg.Partner.Attribution.Reconcile.Interval = 300 * time.Millisecond
	now := time.Now().UTC()
	d := oracleDataset(now, "rec-")
	var proc *attribution.Processor
	_, reg := e.startWith(t, nil, func(p *attribution.Processor) { proc = p })
	e.publishDataset(t, d)
	e.waitCaughtUp(t, 90*time.Second)
	ctx := context.Background()
	if bad, err := proc.ReconcileOnce(ctx); err != nil || len(bad) != 0 {
		t.Fatalf("clean run: %v %v", bad, err)
	}
	testenv.Eventually(t, 30*time.Second, "the periodic reconciliation", func() bool {
		return metric(t, reg, "partners_attribution_reconcile_runs_total", nil) >= 3
	})
	day := now.Truncate(24 * time.Hour).Format(time.DateOnly)
	tamper := func(revenue string) {
		b, err := e.conn.PrepareBatch(ctx, chsql.InsertRollup.SQL)
		if err != nil {
			t.Fatal(err)
		}
		z := decimal.Zero
		if err := b.Append("linear", day, "rec-partner-01", "1970-01-01", "", decimal.RequireFromString(revenue), z, z, int64(0), z, int64(0), int64(0), int64(0), int64(0)); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	tamper("1.25")
	bad, err := proc.ReconcileOnce(ctx)
	if err != nil || len(bad) != 1 || bad[0].PartnerID != "rec-partner-01" || bad[0].Model != "linear" || bad[0].Day != day {
		t.Fatalf("after tampering: %v %v", bad, err)
	}
	if g := metric(t, reg, "partners_attribution_reconcile_mismatches", nil); g != 1 {
		t.Errorf("mismatch gauge %v, want 1", g)
	}
	if !strings.Contains(e.log.String(), "roi_daily and the raw tables disagree") || !strings.Contains(e.log.String(), "linear/"+day+"/rec-partner-01") {
		t.Errorf("no error log naming the key:\n%s", tail(e.log.String(), 2000))
	}
	tamper("-1.25")
	if bad, err := proc.ReconcileOnce(ctx); err != nil || len(bad) != 0 {
		t.Fatalf("after the reversal: %v %v", bad, err)
	}
	if g := metric(t, reg, "partners_attribution_reconcile_mismatches", nil); g != 0 {
		t.Errorf("mismatch gauge %v after the reversal, want 0", g)
	}
}

// TestParamsChangeRefused: corrections are differences of splits, so a
// processor configured with another lookback than the rollup was built with
// refuses to start, naming the keys.
func TestParamsChangeRefused(t *testing.T) {
	e := newEnv(t)
	e.start(t, nil)
	e.publishDataset(t, oracleDataset(time.Now().UTC(), "par-"))
	e.waitCaughtUp(t, 60*time.Second)
	cfg := e.cfg.Partner.Attribution
	cfg.Lookback = 14 * 24 * time.Hour
	p, err := attribution.New(attribution.Options{Config: cfg, Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: e.brokers}, Conn: e.conn, Producer: e.cl, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = p.Run(ctx)
	if !errors.Is(err, attribution.ErrParamsChanged) || !strings.Contains(err.Error(), "lookback=336h0m0s") || !strings.Contains(err.Error(), "lookback_days") {
		t.Fatalf("Run with another lookback: %v", err)
	}
}

// TestRefundKeepsNewCustomers: a refund reverses revenue and conversions,
// never new customers or customers — the documented rule (schemas/
// clickhouse/README.md) — from the rollups and from the raw tables alike;
// a new_customer flag on the refund itself is ignored.
func TestRefundKeepsNewCustomers(t *testing.T) {
	e := newEnv(t)
	tp, cv := e.names.Topic(schemas.TopicTouchpoints), e.names.Topic(schemas.TopicConversions)
	at := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	e.start(t, nil)
	e.publish(t, []*kgo.Record{
		rec(tp, "nu1", schemas.Touchpoint{SchemaVersion: "1", ID: "nt1", UserID: "nu1", PartnerID: "NP", Source: "utm", OccurredAt: at.Add(-time.Hour)}),
		rec(cv, "nu1", schemas.Conversion{SchemaVersion: "1", ID: "nc1", UserID: "nu1", Kind: "purchase", Amount: decimal.RequireFromString("80"), Currency: "USD", NewCustomer: true, OccurredAt: at}),
		rec(cv, "nu1", schemas.Conversion{SchemaVersion: "1", ID: "nr1", UserID: "nu1", Kind: "refund", Amount: decimal.RequireFromString("-80"), Currency: "USD", RefundOf: "nc1", NewCustomer: true, OccurredAt: at.Add(time.Minute)}),
	})
	e.waitCaughtUp(t, 60*time.Second)
	for _, src := range []roi.Source{roi.Rollups, roi.Raw} {
		tots, err := roi.Load(context.Background(), e.conn, roi.Query{PartnerID: "NP", Model: "last_touch", Window: 7}, src)
		if err != nil || len(tots) != 1 {
			t.Fatalf("%v: %+v %v", src, tots, err)
		}
		x := tots[0]
		if !x.Revenue.IsZero() || !x.Conversions.IsZero() || !x.NewCustomers.Equal(decimal.NewFromInt(1)) || x.Customers != 1 {
			t.Errorf("%v: revenue %s conversions %s new customers %s customers %d; want 0, 0, 1, 1", src, x.Revenue, x.Conversions, x.NewCustomers, x.Customers)
		}
	}
}
