package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// verifyAll checks every request of rc with the official Standard Webhooks
// library under each secret, and the companion headers.
func verifyAll(t *testing.T, name string, rc *receiver, secrets ...string) {
	t.Helper()
	for _, r := range rc.requests() {
		for _, s := range secrets {
			wh, err := standardwebhooks.NewWebhook(s)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(r.body, r.header); err != nil {
				t.Errorf("%s: request %s does not verify: %v", name, r.id, err)
			}
		}
		if r.header.Get("X-Idempotency-Key") != r.id || r.id == "" {
			t.Errorf("%s: X-Idempotency-Key %q != webhook-id %q", name, r.header.Get("X-Idempotency-Key"), r.id)
		}
		if r.header.Get("X-Partner-Event") == "" || r.header.Get("traceparent") == "" {
			t.Errorf("%s: missing X-Partner-Event or traceparent: %v", name, r.header)
		}
	}
}

// sameContent asserts every webhook-id of rc always carried the same body.
func sameContent(t *testing.T, name string, rc *receiver) map[string][]received {
	t.Helper()
	by := map[string][]received{}
	for _, r := range rc.requests() {
		if prev, ok := by[r.id]; ok && !bytes.Equal(prev[0].body, r.body) {
			t.Errorf("%s: webhook-id %s carried different bodies:\n%s\n%s", name, r.id, prev[0].body, r.body)
		}
		by[r.id] = append(by[r.id], r)
	}
	return by
}

// TestDeliveryPolicies runs the six partner behaviours of the issue through
// real Kafka and ClickHouse: healthy, fails twice then succeeds, always 500,
// hangs, 429 with Retry-After, 410. It then replays the DLQ, rotates a
// secret, and checks the delivery log and its rollup.
func TestDeliveryPolicies(t *testing.T) {
	e := newEnv(t, true, nil)
	healthy := newReceiver(t, always(200))
	flaky := newReceiver(t, func(n int) (int, map[string]string, bool) {
		if n <= 2 {
			return 503, nil, false
		}
		return 200, nil, false
	})
	failing := newReceiver(t, always(500))
	hanging := newReceiver(t, func(int) (int, map[string]string, bool) { return 0, nil, true })
	limited := newReceiver(t, func(n int) (int, map[string]string, bool) {
		if n == 1 {
			return 429, map[string]string{"Retry-After": "1"}, false
		}
		return 204, nil, false
	})
	gone := newReceiver(t, always(410))
	tn := map[string]struct {
		rc *receiver
		id string
		s  string
		ep string
	}{}
	for name, rc := range map[string]*receiver{"healthy": healthy, "flaky": flaky, "failing": failing, "hanging": hanging, "limited": limited, "gone": gone} {
		c := e.tenant("t-"+name, rc)
		tn[name] = struct {
			rc *receiver
			id string
			s  string
			ep string
		}{rc, c.Tenant.ID, c.WebhookSecret, c.Tenant.Endpoints[0].ID}
	}
	e.start()
	const n = 4
	var evs []schemas.Event
	for _, id := range idsOf(n, "evt_pol_") {
		evs = append(evs, e.event(id, "order.created", `{"order_id":"`+id+`","total":"10.50"}`))
	}
	e.publish(evs...)

	state := ""
	deadline := time.Now().Add(90 * time.Second)
	for {
		h, dl := len(sameContent(t, "healthy", healthy)), len(e.deadLetters())
		state = fmt.Sprintf("healthy %d/%d, flaky %d/%d, failing %d/%d, hanging %d/%d, limited %d/%d, dead letters %d/%d",
			h, n, flaky.count(), 3*n, failing.count(), 3*n, hanging.count(), 3*n, limited.count(), 2*n, dl, 3*n)
		// Every failing, hanging and gone delivery is dead-lettered: the
		// gone ones after a 410 or, once the 410 disabled the endpoint, as
		// disabled (a wait for only the first 2n+1 read the DLQ before those
		// arrived on a loaded machine).
		if h == n && flaky.count() == 3*n && failing.count() == 3*n && hanging.count() == 3*n && limited.count() == 2*n && dl >= 3*n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries not settled after 90s: %s", state)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The 410 disabled the endpoint.
	testenv.Eventually(t, 20*time.Second, "gone endpoint disabled", func() bool {
		ten, _ := e.reg.Get(tn["gone"].id)
		return ten.Endpoints[0].Disabled
	})
	goneCalls := gone.count()
	if goneCalls < 1 || goneCalls > n {
		t.Fatalf("gone endpoint got %d requests, want 1..%d", goneCalls, n)
	}

	for name, x := range tn {
		by := sameContent(t, name, x.rc)
		verifyAll(t, name, x.rc, x.s)
		for id, rs := range by {
			for _, ev := range evs {
				if id == WebhookID(ev.ID, x.ep) {
					goto ok
				}
			}
			t.Errorf("%s: unexpected webhook-id %s", name, id)
		ok:
			if name == "limited" && len(rs) == 2 {
				if gap := rs[1].at.Sub(rs[0].at); gap < 900*time.Millisecond {
					t.Errorf("429 Retry-After: 1 not honoured: second attempt after %v", gap)
				}
			}
		}
	}

	// The DLQ holds exactly the exhausted (failing, hanging) and permanent
	// (gone) deliveries; a gone delivery not attempted before the endpoint
	// was disabled is dead-lettered as such, not lost.
	dls := e.deadLetters()
	counts := map[string]int{}
	for _, dl := range dls {
		switch dl.TenantID {
		case tn["failing"].id:
			counts["failing"]++
			if !strings.HasPrefix(dl.Reason, "attempts exhausted") || dl.ReasonCode != string(ReasonHTTPStatus) || dl.Attempts != 3 || dl.LastStatus != 500 {
				t.Errorf("failing dead letter: %+v", dl)
			}
		case tn["hanging"].id:
			counts["hanging"]++
			if !strings.HasPrefix(dl.Reason, "attempts exhausted") || dl.ReasonCode != string(ReasonTimeout) || dl.Attempts != 3 || dl.LastStatus != 0 || !strings.Contains(dl.LastError, "timeout") {
				t.Errorf("hanging dead letter: reason %q (%s) attempts %d status %d error %q", dl.Reason, dl.ReasonCode, dl.Attempts, dl.LastStatus, dl.LastError)
			}
		case tn["gone"].id:
			if dl.ReasonCode == string(ReasonEndpointDisabled) && dl.Attempts == 0 {
				counts["gone-after-disable"]++
				continue
			}
			counts["gone"]++
			if !strings.HasPrefix(dl.Reason, "endpoint gone (410)") || dl.ReasonCode != string(ReasonGone) || dl.LastStatus != 410 || dl.Attempts != 1 {
				t.Errorf("gone dead letter: %+v", dl)
			}
		default:
			t.Errorf("unexpected dead letter for tenant %s: %s", dl.TenantID, dl.Reason)
		}
		if dl.TraceID == "" || dl.FirstAttemptAt.IsZero() || dl.LastAttemptAt.Before(dl.FirstAttemptAt) || dl.EndpointID == "" || len(dl.Payload) == 0 {
			t.Errorf("dead letter lacks trace id, times, endpoint or payload: %+v", dl)
		}
	}
	if counts["failing"] != n || counts["hanging"] != n || counts["gone"] != goneCalls || counts["gone"]+counts["gone-after-disable"] != n {
		t.Fatalf("DLQ counts %v, want failing=%d hanging=%d gone=%d (+%d after the disable)", counts, n, n, goneCalls, n-goneCalls)
	}

	// Spans: one per attempt, retries linked to the previous attempt, the
	// trace id the one sent in traceparent.
	flakyTraces := map[string]int{}
	links := 0
	for _, s := range e.spans.Ended() {
		if s.Name() != "webhook attempt" {
			continue
		}
		for _, a := range s.Attributes() {
			if a.Key == "tenant.id" && a.Value.AsString() == tn["flaky"].id {
				flakyTraces[s.SpanContext().TraceID().String()]++
				links += len(s.Links())
			}
		}
	}
	if len(flakyTraces) != n || links != 2*n {
		t.Errorf("flaky spans: traces %v (want %d traces of 3 attempts), links %d (want %d)", flakyTraces, n, links, 2*n)
	}
	for _, r := range flaky.requests() {
		tp := r.header.Get("traceparent")
		if parts := strings.Split(tp, "-"); len(parts) != 4 || flakyTraces[parts[1]] != 3 {
			t.Errorf("traceparent %q is not the trace of its attempts", tp)
		}
	}

	// Replay through the admin API handlers: the failing tenant recovers.
	failing.setResponse(always(200))
	hanging.setResponse(always(200))
	before := map[string][]byte{}
	for _, r := range failing.requests() {
		before[r.id] = r.body
	}
	api := &API{P: e.p}
	rec := httptest.NewRecorder()
	api.List(rec, httptest.NewRequest("GET", "/api/v1/dlq?tenant="+tn["failing"].id+"&since=1h", nil))
	var listed struct {
		DeadLetters []map[string]any `json:"dead_letters"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &listed); err != nil || rec.Code != 200 || len(listed.DeadLetters) != n {
		t.Fatalf("GET /api/v1/dlq: %d %s", rec.Code, rec.Body)
	}
	if _, leaked := listed.DeadLetters[0]["payload"]; leaked {
		t.Error("DLQ listing shows payloads")
	}
	rec = httptest.NewRecorder()
	api.Replay(rec, httptest.NewRequest("POST", "/api/v1/dlq/replay?tenant="+tn["failing"].id, nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"replayed": 4`) {
		t.Fatalf("POST /api/v1/dlq/replay: %d %s", rec.Code, rec.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got, err := e.p.Replay(ctx, ReplayRequest{Filter: DLQFilter{Tenant: tn["hanging"].id, EventType: "order.created"}}); err != nil || got.Replayed != n {
		t.Fatalf("replay hanging: %+v, %v", got, err)
	}
	if got, err := e.p.Replay(ctx, ReplayRequest{Filter: DLQFilter{Tenant: tn["hanging"].id, Since: time.Now().Add(time.Hour)}}); err != nil || got.Replayed != 0 {
		t.Fatalf("replay with a future --since replayed %+v, %v", got, err)
	}
	testenv.Eventually(t, 30*time.Second, "replayed deliveries", func() bool {
		return failing.count() == 4*n && hanging.count() == 4*n
	})
	for _, r := range failing.requests()[3*n:] {
		if b, ok := before[r.id]; !ok || !bytes.Equal(b, r.body) {
			t.Errorf("replay of %s: new webhook-id or different body", r.id)
		}
	}
	sameContent(t, "hanging after replay", hanging)
	verifyAll(t, "failing after replay", failing, tn["failing"].s)

	// Secret rotation: both the old and the new secret verify.
	_, newSecret, err := e.writer.RotateSecret(ctx, tn["healthy"].id, "")
	if err != nil {
		t.Fatal(err)
	}
	rot := e.event("evt_pol_rotation", "order.updated", `{}`)
	rot.TenantID = tn["healthy"].id // scoped: only this tenant gets it
	e.publish(rot)
	testenv.Eventually(t, 30*time.Second, "delivery after rotation", func() bool { return healthy.count() == n+1 })
	last := healthy.requests()[n]
	if strings.Count(last.header.Get("webhook-signature"), "v1,") != 2 {
		t.Fatalf("want two signatures during rotation, got %q", last.header.Get("webhook-signature"))
	}
	for _, s := range []string{tn["healthy"].s, newSecret} {
		wh, _ := standardwebhooks.NewWebhook(s)
		if err := wh.Verify(last.body, last.header); err != nil {
			t.Errorf("rotation: signature does not verify with one of the secrets: %v", err)
		}
	}
	if gone.count() != goneCalls {
		t.Errorf("disabled endpoint still called: %d requests, had %d", gone.count(), goneCalls)
	}

	// Delivery log: every attempt on partners.deliveries.v1 lands in
	// ClickHouse with its trace id; the rollup agrees.
	total := 0
	for _, x := range tn {
		total += x.rc.count()
	}
	testenv.Eventually(t, 30*time.Second, "every attempt on the delivery log topic", func() bool {
		return len(e.attempts()) == total
	})
	byAttempt := map[string]int{}
	for _, a := range e.attempts() {
		if a.TenantID == tn["failing"].id {
			byAttempt[fmt.Sprintf("%d:%s", a.Attempt, a.Outcome)]++
		}
	}
	if want := map[string]int{"1:retry": n, "2:retry": n, "3:failed": n, "4:delivered": n}; !reflect.DeepEqual(byAttempt, want) {
		t.Errorf("failing tenant's attempt log %v, want %v", byAttempt, want)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	var inCH uint64
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := e.ch.QueryRow(ctx, "SELECT uniqExact(id) FROM webhook_deliveries").Scan(&inCH); err != nil {
			t.Fatal(err)
		}
		if int(inCH) == total {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if int(inCH) != total {
		rows, _ := e.ch.Query(ctx, "SELECT tenant_id, outcome, count(), uniqExact(id) FROM webhook_deliveries GROUP BY tenant_id, outcome ORDER BY tenant_id, outcome")
		for rows.Next() {
			var ten, out string
			var c, u uint64
			_ = rows.Scan(&ten, &out, &c, &u)
			t.Logf("CH %s %s rows=%d ids=%d", ten, out, c, u)
		}
		rows.Close()
		for name, x := range tn {
			t.Logf("receiver %s %s: %d requests", name, x.id, x.rc.count())
		}
		t.Fatalf("ClickHouse webhook_deliveries has %d attempts, want %d", inCH, total)
	}
	var noTrace, delivered uint64
	if err := e.ch.QueryRow(ctx, "SELECT countIf(trace_id = ''), uniqExactIf(delivery_id, outcome = 'delivered') FROM webhook_deliveries").Scan(&noTrace, &delivered); err != nil {
		t.Fatal(err)
	}
	if noTrace != 0 || delivered != uint64(5*n+1) { // healthy, flaky, limited, failing and hanging (replayed), rotation
		t.Errorf("delivery log: %d rows without trace id, %d delivered (want %d)", noTrace, delivered, 5*n+1)
	}
	var rolled uint64
	var errRate float64
	if err := e.ch.QueryRow(ctx, "SELECT sum(attempts), max(error_rate) FROM webhook_delivery_stats_per_minute WHERE tenant_id = ?", tn["failing"].id).Scan(&rolled, &errRate); err != nil {
		t.Fatal(err)
	}
	if rolled != uint64(failing.count()) || errRate <= 0 {
		t.Errorf("rollup for failing: %d attempts (want %d), error rate %v", rolled, failing.count(), errRate)
	}
	for _, bad := range []string{tn["healthy"].s, newSecret} {
		if strings.Contains(e.logs.String(), bad) {
			t.Fatal("a webhook secret reached the logs")
		}
	}
	_ = http.StatusOK
}
