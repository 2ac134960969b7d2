package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestKill9MidStream builds the partners binary, runs `partners webhooks` on
// the test brokers with local receivers, SIGKILLs it in the middle of 2000
// events × 3 endpoints, restarts it, and checks that every (event, endpoint)
// was delivered at least once and that no webhook-id ever carried two
// different bodies. It prints the duplicates the crash caused.
func TestKill9MidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a subprocess")
	}
	shipped, err := config.Load("../../config/partners-engine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, true, func(c *config.Config) {
		// As config/partners-engine.yaml, so the subprocess finds its topics.
		c.Partner.Webhooks.Retry = shipped.Partner.Webhooks.Retry
	})
	dir := t.TempDir()
	bin := filepath.Join(dir, "partners")
	build := exec.Command("go", "build", "-o", bin, "github.com/partners-engine/partners-engine/cmd/partners")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root, _ := filepath.Abs("../..")

	// The third partner fails the first request of one delivery in 16 (by
	// webhook-id: rare enough never to open its breaker), so deliveries
	// move through partners.webhooks.retry.1 around the crash.
	rcs := []*receiver{newReceiver(t, always(200)), newReceiver(t, always(200)), nil}
	rcs[2] = newReceiver(t, always(204))
	rcs[2].mu.Lock()
	rcs[2].failFirst = func(id string) bool { return strings.HasSuffix(id, "0") }
	rcs[2].mu.Unlock()
	var eps []string
	var apiKey, tenant0 string
	for i, rc := range rcs {
		c := e.tenant(fmt.Sprintf("t-crash-%d", i), rc)
		eps = append(eps, c.Tenant.Endpoints[0].ID)
		if i == 0 {
			apiKey, tenant0 = c.APIKey, c.Tenant.ID
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := lis.Addr().String()
	lis.Close()
	const n = 2000
	ids := idsOf(n, "evt_crash_")
	for i := 0; i < n; i += 500 {
		var evs []schemas.Event
		for _, id := range ids[i:min(i+500, n)] {
			evs = append(evs, e.event(id, "order.created", `{"id":"`+id+`","amount":"12.30"}`))
		}
		e.publish(evs...)
	}
	total := func() int {
		s := 0
		for _, rc := range rcs {
			s += rc.count()
		}
		return s
	}
	cliEnv := func() []string {
		return append(os.Environ(),
			"PARTNERS_KAFKA_BROKERS="+strings.Join(e.brokers, ","),
			"PARTNERS_TOPIC_PREFIX="+e.cfg.Kafka.TopicPrefix,
			"PARTNERS_CLICKHOUSE_ADDR="+e.cfg.ClickHouse.Addr[0],
			"PARTNERS_CLICKHOUSE_DB="+e.cfg.ClickHouse.Database,
			"PARTNERS_ADMIN_LISTEN="+adminAddr,
			"PARTNERS_ADMIN_URL=http://"+adminAddr,
			"PARTNERS_ADMIN_TOKEN="+e.cfg.Admin.Token,
			"PARTNERS_KEY_PEPPER="+e.cfg.Partner.Keys.Pepper,
			"PARTNERS_WEBHOOK_ALLOW=127.0.0.1/32:1024-65535",
			"PARTNERS_INSTANCE_ID=crash-"+strings.TrimSuffix(e.cfg.Kafka.TopicPrefix, "."),
			"PARTNERS_LOG_LEVEL=info",
		)
	}
	start := func(run int) (*exec.Cmd, *os.File) {
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("run%d.log", run)))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--config", filepath.Join(root, "config/partners-engine.yaml"), "webhooks")
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = cliEnv()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, logf
	}
	dumpLog := func(run int) {
		b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("run%d.log", run)))
		t.Logf("run %d log (tail):\n%s", run, tail(string(b), 3000))
	}

	cmd, logf := start(1)
	deadline := time.Now().Add(90 * time.Second)
	for total() < 3*n/2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	atKill := total()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	logf.Close()
	if atKill < n/2 {
		dumpLog(1)
		t.Fatalf("only %d requests before the kill deadline", atKill)
	}
	if atKill >= 3*n+n/2 {
		t.Fatalf("the kill came too late (%d requests): not mid-stream", atKill)
	}
	time.Sleep(200 * time.Millisecond) // requests in flight at the kill land
	afterKill := total()

	cmd, logf = start(2)
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	deadline = time.Now().Add(120 * time.Second)
	delivered := func() map[string]bool {
		seen := map[string]bool{}
		for _, rc := range rcs {
			for _, r := range rc.requests() {
				if r.status >= 200 && r.status < 300 {
					seen[r.id] = true
				}
			}
		}
		return seen
	}
	for len(delivered()) < 3*n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	// Every (event, endpoint) at least once, under its deterministic id.
	seen := delivered()
	missing := 0
	for _, id := range ids {
		for _, ep := range eps {
			if !seen[WebhookID(id, ep)] {
				missing++
			}
		}
	}
	if missing > 0 {
		dumpLog(2)
		t.Fatalf("%d of %d (event, endpoint) pairs never delivered after the restart", missing, 3*n)
	}
	// No webhook-id ever carried different content.
	bodies := map[string][32]byte{}
	requests, ok2xx := 0, 0
	for _, rc := range rcs {
		for _, r := range rc.requests() {
			requests++
			if r.status >= 200 && r.status < 300 {
				ok2xx++
			}
			h := sha256.Sum256(r.body)
			if prev, ok := bodies[r.id]; ok && prev != h {
				t.Errorf("webhook-id %s carried two different bodies", r.id)
				for _, x := range rc.requests() {
					if x.id == r.id {
						t.Logf("%s at %v: %s", x.id, x.at, x.body)
					}
				}
			}
			bodies[r.id] = h
		}
		verifyAll(t, "crash", rc) // headers; signatures are checked in TestDeliveryPolicies
	}
	// Every move between topics happened exactly once: no record was
	// moved to the retry topic twice (header moved-from names the record a
	// move consumed), although attempts were repeated. A delivery may have
	// several records there legitimately (held again, moved on in time).
	perFrom := map[string]int{}
	perID := map[string]int{}
	for _, r := range e.readAll(e.topic(schemas.TopicRetryPrefix + "1")) {
		from, _ := kafka.Header(r, "moved-from")
		perFrom[from]++
		perID[string(r.Key)]++
	}
	twice := 0
	for from, c := range perFrom {
		if c > 1 || from == "" {
			twice++
			t.Logf("moved from %q %d times", from, c)
		}
	}
	if len(perID) == 0 || twice > 0 {
		t.Errorf("retry.1 holds %d deliveries, %d source records moved more than once (or unnamed)", len(perID), twice)
	}
	planned := 0
	for _, id := range ids {
		if rcs[2].failFirst(WebhookID(id, eps[2])) {
			planned++
		}
	}
	t.Logf("retry.1 holds %d deliveries in %d records, each moved once", len(perID), len(perFrom))
	// What a crash repeats is bounded by construction: a stage holds at
	// most its in-flight window of records accepted but not committed, and
	// only the first-attempt and retry.1 stages had records here.
	// An event record carries 3 deliveries here, a retry record one.
	w := InFlightWindow(shipped.Partner.Webhooks)
	repeated, bound := ok2xx-3*n, 3*w+w
	t.Logf("kill -9 after %d requests (%d had landed when the restart began); %d requests in all for %d deliveries (%d planned 503s): %d deliveries repeated after success because of the crash (bound: in-flight window of %d records per stage: %d deliveries here)",
		atKill, afterKill, requests, 3*n, planned, repeated, w, bound)
	if repeated > bound {
		t.Errorf("%d deliveries repeated after the crash, more than the in-flight window allows (%d)", repeated, bound)
	}

	// The delivery log reached ClickHouse through the restarted process.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var got uint64
	for ctx.Err() == nil {
		if err := e.ch.QueryRow(ctx, "SELECT uniqExactIf(delivery_id, outcome = 'delivered') FROM webhook_deliveries").Scan(&got); err == nil && got == 3*n {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != 3*n {
		dumpLog(2)
		t.Errorf("ClickHouse delivery log has %d delivered deliveries, want %d", got, 3*n)
	}

	// The CLI and the admin routes addWebhooks mounted, on the running binary:
	// an unknown event type published with `partners events publish` is
	// listed by `partners dlq list`; `partners dlq replay` answers; the
	// tenant's webhook test reaches its endpoint.
	cli := func(args ...string) []byte {
		c := exec.Command(bin, append([]string{"--config", filepath.Join(root, "config/partners-engine.yaml")}, args...)...)
		c.Dir, c.Env = root, cliEnv()
		out, err := c.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("partners %v: %v\n%s%s", args, err, out, stderr)
		}
		return out
	}
	// `partners events publish` refuses a type the processor would
	// dead-letter (exit 2); one published anyway by another producer is
	// dead-lettered and listed by `partners dlq list`, table and JSON.
	refuse := exec.Command(bin, "--config", filepath.Join(root, "config/partners-engine.yaml"),
		"events", "publish", "--type", "spaceship.launched", "--data", `{"x":1}`, "--id", "evt_cli_refused")
	refuse.Dir, refuse.Env = root, cliEnv()
	if out, err := refuse.CombinedOutput(); err == nil || !strings.Contains(string(out), "event_types") {
		t.Errorf("partners events publish of an unknown type: %v\n%s", err, out)
	}
	e.publish(e.event("evt_cli_unknown", "spaceship.launched", `{"x":1}`))
	var listed struct {
		DeadLetters []schemas.DeadLetter `json:"dead_letters"`
	}
	testenv.Eventually(t, 30*time.Second, "dead letter listed by the CLI", func() bool {
		_ = json.Unmarshal(cli("dlq", "list", "--format", "json", "--since", "1h"), &listed)
		return len(listed.DeadLetters) == 1
	})
	if dl := listed.DeadLetters[0]; dl.EventID != "evt_cli_unknown" || !strings.HasPrefix(dl.Reason, "unknown event type") {
		t.Errorf("partners dlq list: %+v", dl)
	}
	if out := string(cli("dlq", "list", "--since", "1h")); !strings.Contains(out, "REASON CODE") || !strings.Contains(out, "unknown_event_type") ||
		!strings.Contains(out, "unknown event type: spaceship.launched") {
		t.Errorf("partners dlq list (table):\n%s", out)
	}
	if out := cli("dlq", "replay", "--tenant", tenant0); !strings.Contains(string(out), `"replayed": 0`) {
		t.Errorf("partners dlq replay: %s", out)
	}
	req, _ := http.NewRequest("POST", "http://"+adminAddr+"/api/v1/partners/webhooks/test", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	before := rcs[0].count()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		Results []TestResult `json:"results"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(tr.Results) != 1 || tr.Results[0].Outcome != schemas.OutcomeDelivered || rcs[0].count() != before+1 {
		t.Errorf("webhook test route: %d %+v", resp.StatusCode, tr)
	}

	// A graceful stop drains and exits 0.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			dumpLog(2)
			t.Errorf("partners webhooks exited with %v after SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Error("partners webhooks did not stop within 60s of SIGTERM")
	}
	logf.Close()
	testenv.Eventually(t, time.Second, "no leak of secrets", func() bool { return true })
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
