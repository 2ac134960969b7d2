package attribution_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
)

// repoRoot is the module root (for the binary build and deploy scripts).
func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func faultDataset(now time.Time, users int) Dataset {
	return Generate(GenOptions{
		Seed: 7, Now: now, Days: 60, Partners: 5, Users: users, MaxTouches: 4, MaxConvs: 3,
		RefundRate: 0.2, CostsPer: 40,
	})
}

func countRows(t *testing.T, e *env) uint64 {
	var n uint64
	if err := e.conn.QueryRow(context.Background(), "SELECT count() FROM attributions").Scan(&n); err != nil {
		return 0
	}
	return n
}

// TestKill9MidStream builds the partners binary, runs `partners attribution`
// as a subprocess on the test's topics and database, SIGKILLs it twice while
// it is inserting, restarts it, and checks the numbers equal the oracle.
func TestKill9MidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	e := newEnv(t)
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "partners")
	build := exec.Command("go", "build", "-o", bin, "./cmd/partners")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	now := time.Now().UTC()
	d := faultDataset(now, 12_000)
	want := expected(d, e, now, 30, 60)
	e.publishDataset(t, d)
	t.Logf("published %d records", d.Len())

	var logs bytes.Buffer
	var mu sync.Mutex
	type proc struct {
		cmd  *exec.Cmd
		done chan struct{}
	}
	run := func() *proc {
		cmd := exec.Command(bin, "attribution", "--config", filepath.Join(root, "config/partners-engine.yaml"))
		cmd.Env = append(os.Environ(),
			"PARTNERS_KAFKA_BROKERS="+strings.Join(e.brokers, ","),
			"PARTNERS_TOPIC_PREFIX="+e.cfg.Kafka.TopicPrefix,
			"PARTNERS_CLICKHOUSE_DB="+e.cfg.ClickHouse.Database,
			"PARTNERS_CLICKHOUSE_ADDR="+e.cfg.ClickHouse.Addr[0],
			"PARTNERS_ADMIN_LISTEN=127.0.0.1:0",
			"PARTNERS_ADMIN_TOKEN="+e.cfg.Admin.Token,
			"PARTNERS_KEY_PEPPER="+e.cfg.Partner.Keys.Pepper,
			"PARTNERS_LOG_LEVEL=warn",
		)
		cmd.Dir = root
		w := &lockedWriter{mu: &mu, w: &logs}
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: cmd, done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(p.done) }()
		return p
	}
	defer func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("subprocess logs:\n%s", tail(logs.String(), 4000))
			mu.Unlock()
		}
	}()
	for kill := 1; kill <= 2; kill++ {
		p := run()
		before := countRows(t, e)
		testenv.Eventually(t, 60*time.Second, "the processor inserting", func() bool {
			select {
			case <-p.done:
				t.Fatalf("partners attribution exited: %v", p.cmd.ProcessState)
			default:
			}
			return countRows(t, e) > before
		})
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		t.Logf("kill -9 #%d with %d attribution rows in ClickHouse", kill, countRows(t, e))
	}
	p := run()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	})
	e.waitCaughtUp(t, 90*time.Second)
	diff(t, "rollups after kill -9 and restart", snapshot(t, e, roi.Rollups, now, 30, 60), want)
	diff(t, "raw after kill -9 and restart", snapshot(t, e, roi.Raw, now, 30, 60), want)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// ownClickHouse runs a private ClickHouse server with deploy/local/
// clickhouse.sh on free ports and its own data directory, so the test can
// stop it without touching the shared one.
type ownClickHouse struct {
	t    *testing.T
	root string
	env  []string
	addr string
}

func startOwnClickHouse(t *testing.T) *ownClickHouse {
	tcp, http := testenv.FreePort(t), testenv.FreePort(t)
	c := &ownClickHouse{t: t, root: repoRoot(t), addr: "127.0.0.1:" + strconv.Itoa(tcp), env: append(os.Environ(),
		"PARTNERS_CLICKHOUSE_DIR="+t.TempDir(),
		"CLICKHOUSE_TCP_PORT="+strconv.Itoa(tcp),
		"CLICKHOUSE_HTTP_PORT="+strconv.Itoa(http),
	)}
	c.script("start")
	t.Cleanup(func() { c.script("stop") })
	return c
}

func (c *ownClickHouse) script(verb string) {
	cmd := exec.Command("bash", "deploy/local/clickhouse.sh", verb)
	cmd.Dir, cmd.Env = c.root, c.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("clickhouse.sh %s: %v\n%s", verb, err, out)
	}
	c.t.Logf("clickhouse.sh %s: %s", verb, strings.TrimSpace(string(out)))
}

// TestClickHouseOutage stops the processor's ClickHouse (a private
// instance) for 30 s while records keep arriving: nothing is committed
// during the outage, the processor retries with backoff and catches up when
// the server returns, and the numbers equal the oracle.
func TestClickHouseOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage")
	}
	ch := startOwnClickHouse(t)
	cfg := testenv.Config(t)
	cfg.ClickHouse.Addr = []string{ch.addr}
	brokers, cl := testenv.Kafka(t, cfg)
	conn := testenv.ClickHouse(t, cfg)
	e := &env{cfg: cfg, brokers: brokers, cl: cl, conn: conn, names: namesOf(cfg), log: &testenv.LogBuffer{}}
	now := time.Now().UTC()
	d := faultDataset(now, 2_000)
	half := Dataset{
		Touchpoints: d.Touchpoints[:len(d.Touchpoints)/2], Conversions: d.Conversions[:len(d.Conversions)/2], Costs: d.Costs[:len(d.Costs)/2],
	}
	rest := Dataset{
		Touchpoints: d.Touchpoints[len(d.Touchpoints)/2:], Conversions: d.Conversions[len(d.Conversions)/2:], Costs: d.Costs[len(d.Costs)/2:],
	}
	want := expected(d, e, now, 30, 60)
	e.start(t, nil)
	e.publishDataset(t, half)
	e.waitCaughtUp(t, 60*time.Second)

	ch.script("stop")
	down := time.Now()
	e.publishDataset(t, rest)
	time.Sleep(30 * time.Second)
	if n := strings.Count(e.log.String(), "retrying it (offsets not committed)"); n == 0 {
		t.Fatalf("no retries logged during a %v outage", time.Since(down).Round(time.Second))
	} else {
		t.Logf("%d batch retries logged during the outage", n)
	}
	if caughtUp(t, e) {
		t.Fatal("offsets committed while ClickHouse was down")
	}
	ch.script("start")
	up := time.Now()
	e.waitCaughtUp(t, 60*time.Second)
	t.Logf("caught up %v after ClickHouse returned", time.Since(up).Round(100*time.Millisecond))
	diff(t, "rollups after the outage", snapshot(t, e, roi.Rollups, now, 30, 60), want)
	diff(t, "raw after the outage", snapshot(t, e, roi.Raw, now, 30, 60), want)
}
