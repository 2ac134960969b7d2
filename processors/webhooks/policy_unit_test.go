package webhooks

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

func testPolicy() policy {
	w := config.Default().Partner.Webhooks
	w.Retry = config.Retry{MaxAttempts: 4, BackoffBase: time.Second, BackoffMultiplier: 4, BackoffMax: 30 * time.Second, MaxAge: time.Hour}
	w.MaxRetryAfter = 10 * time.Minute
	return newPolicy(w)
}

// TestPolicyDecide: the routing of every kind of outcome, as a table.
func TestPolicyDecide(t *testing.T) {
	p := testPolicy()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	fresh := Task{Since: now.Add(-time.Minute)}
	old := Task{Since: now.Add(-2 * time.Hour), LastError: "connection refused"}
	fail := func(r Reason) outcome {
		return outcome{kind: attempted, att: Attempt{Class: Retryable, Reason: r, Err: string(r)}}
	}
	for _, tc := range []struct {
		name   string
		t      Task
		o      outcome
		act    action
		reason Reason
		level  int
		charge bool
	}{
		{"delivered", fresh, outcome{kind: attempted, att: Attempt{Class: Delivered}}, actDone, "", 0, false},
		{"first failure", fresh, fail(ReasonTimeout), actRetry, "", 1, true},
		{"third failure", Task{Since: fresh.Since, Charged: 2}, fail(ReasonHTTPStatus), actRetry, "", 3, true},
		{"budget spent", Task{Since: fresh.Since, Charged: 3}, fail(ReasonHTTPStatus), actDeadLetter, ReasonHTTPStatus, 0, true},
		{"failed probe keeps the budget", Task{Since: fresh.Since, Charged: 3}, outcome{kind: attempted, probe: true, until: now.Add(20 * time.Second),
			att: Attempt{Class: Retryable, Reason: ReasonConnRefused}}, actRetry, "", 3, false},
		{"too old", old, fail(ReasonConnRefused), actDeadLetter, ReasonConnRefused, 0, true},
		{"held", fresh, outcome{kind: held, reason: ReasonBreakerOpen, until: now.Add(25 * time.Second)}, actHold, "", 3, false},
		{"held too old", old, outcome{kind: held, reason: ReasonBreakerOpen, until: now.Add(time.Minute)}, actDeadLetter, ReasonBreakerOpen, 0, false},
		{"retry-after beyond the backoff", fresh, outcome{kind: attempted, att: Attempt{Class: Retryable, Reason: ReasonHTTPStatus, RetryAfter: 40 * time.Second}},
			actRetry, "", 3, true},
		{"permanent", fresh, outcome{kind: attempted, att: Attempt{Class: Permanent, Reason: ReasonBlocked}}, actDeadLetter, ReasonBlocked, 0, true},
		{"gone", fresh, outcome{kind: attempted, att: Attempt{Class: Gone, Reason: ReasonGone}}, actDeadLetter, ReasonGone, 0, true},
		{"suspended", fresh, outcome{kind: rejected, reason: ReasonTenantSuspended, detail: "tenant not active: suspended"}, actDeadLetter, ReasonTenantSuspended, 0, false},
		{"filtered out", fresh, outcome{kind: filtered}, actDone, "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.decide(tc.t, tc.o, now)
			if d.action != tc.act || d.reason != tc.reason || d.charge != tc.charge || (tc.level != 0 && d.level != tc.level) {
				t.Fatalf("decide = %+v, want %v reason %q level %d charge %v", d, tc.act, tc.reason, tc.level, tc.charge)
			}
			if d.action == actDeadLetter && d.text == "" {
				t.Fatal("a dead letter without words")
			}
		})
	}
	if d := p.decide(Task{Since: fresh.Since}, outcome{kind: attempted, att: Attempt{Class: Gone}}, now); !d.disable {
		t.Error("a 410 must ask for the endpoint to be disabled")
	}
}

// TestGateHoldsAndProbes: the breaker opens after the threshold, holds
// until open time, lets exactly one probe through, backs off on a failed
// probe, closes on a good one and then rate-limits the drain; a 429's
// Retry-After holds the endpoint; a new URL resets it.
func TestGateHoldsAndProbes(t *testing.T) {
	w := config.Default().Partner.Webhooks
	w.Breaker = config.Breaker{ConsecutiveFailures: 2, Open: 10 * time.Second, MaxOpen: 25 * time.Second}
	w.Recovery = config.Recovery{RatePerSec: 2, Burst: 2}
	g := &gate{cfg: newGateConfig(w, nil)}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	url := "https://a.example/hook"
	for i := range 2 {
		if a := g.admit("ep", url, now, "", time.Time{}); !a.ok || a.probe {
			t.Fatalf("closed, attempt %d: %+v", i, a)
		}
		g.report("ep", now, false, unhealthy, 0)
	}
	if a := g.admit("ep", url, now.Add(time.Second), "", time.Time{}); a.ok || a.reason != ReasonBreakerOpen || !a.until.Equal(now.Add(10*time.Second)) {
		t.Fatalf("open: %+v", a)
	}
	probe := g.admit("ep", url, now.Add(10*time.Second), ReasonBreakerOpen, time.Time{})
	if !probe.ok || !probe.probe {
		t.Fatalf("half-open: %+v, want the probe", probe)
	}
	if a := g.admit("ep", url, now.Add(10*time.Second), ReasonBreakerOpen, time.Time{}); a.ok {
		t.Fatal("a second delivery went while the probe was out")
	}
	until := g.report("ep", now.Add(11*time.Second), true, unhealthy, 0)
	if !until.Equal(now.Add(31 * time.Second)) { // open time doubled: 20 s
		t.Fatalf("failed probe: open until %v, want +20 s", until.Sub(now))
	}
	probe = g.admit("ep", url, now.Add(31*time.Second), ReasonBreakerOpen, time.Time{})
	g.report("ep", now.Add(31*time.Second), true, healthy, 0)
	if g.stateAt() != closed || !probe.probe {
		t.Fatalf("after a good probe: %v", g.stateAt())
	}
	// Recovering: burst 2, then 2/s; new deliveries queue behind held ones.
	at := now.Add(31 * time.Second)
	ok := 0
	for range 5 {
		if g.admit("ep", url, at, ReasonBreakerOpen, time.Time{}).ok {
			ok++
		}
	}
	if ok != 2 {
		t.Fatalf("%d admitted at once while recovering, want the burst (2)", ok)
	}
	if a := g.admit("ep", url, at, "", time.Time{}); a.ok || a.reason != ReasonRecovering {
		t.Fatalf("a new delivery while the backlog drains: %+v", a)
	}
	// Retry-After holds everything.
	g.report("ep", at, false, healthy, 30*time.Second)
	if a, blocked := g.blocked(at.Add(time.Second)); !blocked || a.reason != ReasonRetryAfter {
		t.Fatalf("after Retry-After 30 s: %+v", a)
	}
	// A new URL is a new endpoint.
	if a := g.admit("ep", "https://b.example/hook", at.Add(time.Second), "", time.Time{}); !a.ok {
		t.Fatalf("new URL: %+v", a)
	}
}

// TestGateDrainsOldestFirst: after an outage whose backlog built up
// unevenly (most deliveries early), the deliveries coming back in any order
// get slots in the order of their age, spread over the drain at the
// recovery rate, and the youngest backlog delivery is due before a new one.
func TestGateDrainsOldestFirst(t *testing.T) {
	w := config.Default().Partner.Webhooks
	w.Breaker = config.Breaker{ConsecutiveFailures: 1, Open: 10 * time.Second, MaxOpen: 10 * time.Second}
	w.Recovery = config.Recovery{RatePerSec: 10, Burst: 2}
	g := &gate{cfg: newGateConfig(w, nil)}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	url := "https://a.example/hook"
	g.admit("ep", url, t0, "", t0)
	g.report("ep", t0, false, unhealthy, 0)
	const n = 200
	since := make([]time.Time, n)
	for i := range n {
		since[i] = t0.Add(time.Duration(i) * time.Millisecond) // 200 in the first 0.2 s of a 10 s outage
		if a := g.admit("ep", url, since[i], "", since[i]); a.ok || a.reason != ReasonBreakerOpen {
			t.Fatalf("delivery %d during the outage: %+v", i, a)
		}
	}
	back := t0.Add(10 * time.Second)
	if p := g.admit("ep", url, back, ReasonBreakerOpen, since[0]); !p.probe {
		t.Fatalf("no probe: %+v", p)
	}
	g.report("ep", back, true, healthy, 0)
	due := make([]time.Time, n)
	for _, i := range rand.Perm(n) {
		a := g.admit("ep", url, back, ReasonBreakerOpen, since[i])
		due[i] = back
		if !a.ok {
			due[i] = a.until
		}
	}
	for i := 1; i < n; i++ {
		if due[i].Before(due[i-1]) {
			t.Fatalf("delivery %d (older) is due at +%v, after delivery %d at +%v", i-1, due[i-1].Sub(back), i, due[i].Sub(back))
		}
	}
	// The slots span the backlog at the recovery rate (with the share
	// left for late deliveries), not the outage's clock.
	if span, want := due[n-1].Sub(back), time.Duration(float64(n-2)/(drainShare*10)*float64(time.Second)); span < want*9/10 || span > want {
		t.Errorf("the backlog's slots span %v, want about %v", span, want)
	}
	if a := g.admit("ep", url, back, "", back); a.ok || a.until.Before(due[n-1]) {
		t.Errorf("a new delivery while the backlog drains: %+v, want it held until after the backlog (+%v)", a, due[n-1].Sub(back))
	}
}

// TestEndpointStateShrinks: breaker and bulkhead state of endpoints that
// went away, or went idle, is dropped.
func TestEndpointStateShrinks(t *testing.T) {
	cfg := config.Default()
	var list []*schemas.Tenant
	for i := range 100 {
		list = append(list, &schemas.Tenant{ID: "tn_" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Status: schemas.StatusActive,
			Endpoints: []schemas.Endpoint{{ID: "ep_" + string(rune('a'+i%26)) + string(rune('a'+i/26))}}})
	}
	ts := &mutableTenants{list: list}
	p, err := New(Options{Config: cfg.Partner.Webhooks, Tenants: ts, Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ten := range list {
		p.gates.get(ten.Endpoints[0].ID)
		p.bulk.lane(ten.Endpoints[0].ID)
		rel, _ := p.bulk.acquire(context.Background(), ten.ID)
		rel()
	}
	if g, l, tn := p.tracked(); g != 100 || l != 100 || tn != 100 {
		t.Fatalf("tracked %d gates, %d lanes, %d tenants", g, l, tn)
	}
	now := time.Now().Add(2 * time.Second)
	ts.list = list[:10] // 90 tenants and their endpoints are gone
	p.sweepAt(now, time.Hour)
	if g, l, tn := p.tracked(); g != 10 || l != 10 || tn != 10 {
		t.Fatalf("after 90 tenants went away: %d gates, %d lanes, %d tenants, want 10 each", g, l, tn)
	}
	p.sweepAt(now.Add(2*time.Hour), time.Hour)
	if g, l, tn := p.tracked(); g != 0 || l != 0 || tn != 0 {
		t.Fatalf("after an idle hour: %d gates, %d lanes, %d tenants", g, l, tn)
	}
}

type mutableTenants struct{ list []*schemas.Tenant }

func (m *mutableTenants) Get(id string) (*schemas.Tenant, bool) {
	for _, t := range m.list {
		if t.ID == id {
			return t, true
		}
	}
	return nil, false
}
func (m *mutableTenants) List() []*schemas.Tenant { return m.list }

// TestDLQIndexDepthGoesDown: the depth gauge counts dead letters waiting:
// it goes down when one is replayed (a newer state for its key) and when
// it passes the DLQ's retention.
func TestDLQIndexDepthGoesDown(t *testing.T) {
	cfg := config.Default()
	cfg.Partner.Webhooks.DLQ.Retention = 24 * time.Hour
	p, err := New(Options{Config: cfg.Partner.Webhooks, Tenants: &mutableTenants{}, Log: discard()})
	if err != nil {
		t.Fatal(err)
	}
	x := p.index
	now := time.Now().UTC()
	put := func(key, status string, deadAt time.Time, off int64) {
		b, _ := json.Marshal(indexRecord{DeadLetter: schemas.DeadLetter{SchemaVersion: "1", DeliveryID: key, TenantID: "tn_a",
			EndpointID: "ep_a", Reason: "x", Payload: json.RawMessage(`{}`)}, Key: key, Status: status, DeadAt: deadAt})
		x.apply(&kgo.Record{Key: []byte(key), Value: b, Offset: off})
	}
	put("msg_1", statusDead, now, 0)
	put("msg_2", statusDead, now.Add(-time.Hour), 1)
	put("msg_old", statusDead, now.Add(-48*time.Hour), 2) // past retention: not counted
	gauge := func() float64 { return testutil.ToFloat64(p.m.dlqDepth) }
	if x.Depth() != 2 || gauge() != 2 {
		t.Fatalf("depth %d (gauge %v), want 2", x.Depth(), gauge())
	}
	put("msg_1", statusReplayed, now, 3)
	if x.Depth() != 1 || gauge() != 1 {
		t.Fatalf("after a replay: depth %d (gauge %v), want 1", x.Depth(), gauge())
	}
	x.expire(now.Add(24*time.Hour - 30*time.Minute))
	if x.Depth() != 0 || gauge() != 0 {
		t.Fatalf("after msg_2 expired: depth %d (gauge %v), want 0", x.Depth(), gauge())
	}
	if es, _, _ := x.List(DLQFilter{Status: "all"}); len(es) != 1 || es[0].Key != "msg_1" {
		t.Fatalf("left in the index: %+v", es)
	}
}
