package webhooks

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// scaled is the shipped retry, breaker and recovery configuration with every
// time divided by f (and the recovery rate multiplied by it): the tests run
// hours of partner behaviour in seconds through the configuration, not a
// fake clock.
func scaled(c *config.Config, f time.Duration) {
	d := config.Default().Partner.Webhooks
	c.Partner.Webhooks.Retry = config.Retry{MaxAttempts: d.Retry.MaxAttempts, BackoffBase: d.Retry.BackoffBase / f,
		BackoffMultiplier: d.Retry.BackoffMultiplier, BackoffMax: d.Retry.BackoffMax / f, MaxAge: d.Retry.MaxAge / f}
	c.Partner.Webhooks.Breaker = config.Breaker{ConsecutiveFailures: d.Breaker.ConsecutiveFailures, Open: d.Breaker.Open / f, MaxOpen: d.Breaker.MaxOpen / f}
	c.Partner.Webhooks.Recovery = config.Recovery{RatePerSec: d.Recovery.RatePerSec * float64(f), Burst: d.Recovery.Burst}
}

// stopListening makes the receiver's port refuse connections (the partner
// is down); listenAgain brings it back on the same URL.
func (rc *receiver) stopListening() {
	rc.srv.CloseClientConnections()
	rc.srv.Listener.Close()
}

func (rc *receiver) listenAgain(t *testing.T) {
	t.Helper()
	addr := rc.srv.Listener.Addr().String()
	var lis net.Listener
	var err error
	for range 50 {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv := &httptest.Server{Listener: lis, Config: &http.Server{Handler: http.HandlerFunc(rc.serve)}}
	srv.Start()
	t.Cleanup(srv.Close)
}

// TestFirstAttemptAlwaysFails: a receiver that answers 503 to the first
// attempt of every message, with the shipped breaker (5 consecutive
// failures) and attempt budget, gets every message: while the breaker is
// open deliveries are held, not burnt.
func TestFirstAttemptAlwaysFails(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) { scaled(c, 60) })
	rc := newReceiver(t, always(200))
	rc.mu.Lock()
	rc.failFirst = func(string) bool { return true }
	rc.mu.Unlock()
	e.tenant("t-first-fails", rc)
	e.start()
	const n = 100
	var evs []schemas.Event
	for _, id := range idsOf(n, "evt_ff_") {
		evs = append(evs, e.event(id, "order.created", `{}`))
	}
	e.publish(evs...)
	testenv.Eventually(t, 90*time.Second, "every message delivered", func() bool {
		ok := 0
		for _, rs := range sameContent(t, "first-fails", rc) {
			if rs[len(rs)-1].status == 200 {
				ok++
			}
		}
		return ok == n
	})
	if dls := e.deadLetters(); len(dls) != 0 {
		t.Fatalf("%d dead letters, want none: first is %+v", len(dls), dls[0])
	}
	t.Logf("%d requests for %d messages whose first attempt always fails", rc.count(), n)
}

// TestPartnerDownForTenMinutes: a partner down for "10 minutes" (the
// shipped timings divided by 60: 10 s, a dozen breaker cycles) beside a
// healthy one gets every event once it is back, the DLQ stays empty, the
// healthy partner is not held up, and the backlog drains at the recovery
// rate.
func TestPartnerDownForTenMinutes(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		scaled(c, 60)
		c.Partner.Webhooks.Recovery = config.Recovery{RatePerSec: 40, Burst: 20}
	})
	down := newReceiver(t, always(200))
	healthy := newReceiver(t, always(200))
	e.tenant("t-down", down)
	e.tenant("t-up", healthy)
	e.start()
	e.publish(e.event("evt_down_warm", "order.created", `{}`))
	testenv.Eventually(t, 30*time.Second, "warm-up", func() bool { return down.count() == 1 && healthy.count() == 1 })

	down.stopListening()
	outage := time.Now()
	const n = 300
	ids := idsOf(n, "evt_down_")
	for i := 0; i < n; i += 30 { // spread over the outage
		var evs []schemas.Event
		for _, id := range ids[i : i+30] {
			evs = append(evs, e.event(id, "order.created", `{}`))
		}
		e.publish(evs...)
		time.Sleep(250 * time.Millisecond)
	}
	testenv.Eventually(t, 60*time.Second, "the healthy partner gets its events during the outage", func() bool {
		return healthy.count() == n+1
	})
	time.Sleep(time.Until(outage.Add(10 * time.Second)))
	back := time.Now()
	down.listenAgain(t)
	testenv.Eventually(t, 120*time.Second, "every event delivered once the partner is back", func() bool {
		return len(sameContent(t, "down", down)) == n+1
	})
	if dls := e.deadLetters(); len(dls) != 0 {
		t.Fatalf("%d dead letters after a 10-minute (scaled) outage, want none: %+v", len(dls), dls[0])
	}
	// The backlog drained at the recovery rate: in any second after the
	// partner came back, at most burst + rate requests (plus what one lane
	// has in flight) arrived.
	var at []time.Time
	for _, r := range down.requests() {
		if r.at.After(back) {
			at = append(at, r.at)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	peak := 0
	for i := range at {
		j := i
		for j < len(at) && at[j].Sub(at[i]) < time.Second {
			j++
		}
		peak = max(peak, j-i)
	}
	if limit := 20 + 40 + e.cfg.Partner.Webhooks.PerEndpoint; peak > limit {
		t.Errorf("backlog drained at %d requests in one second, more than burst+rate allows (%d)", peak, limit)
	}
	// Oldest first: the order in which the held events arrived after the
	// partner came back follows the order they were published in.
	rank := map[string]int{}
	for i, id := range ids {
		rank[id] = i
	}
	var order []int // publish rank, in arrival order
	seen := map[string]bool{}
	for _, r := range down.requests() {
		var body struct {
			ID string `json:"id"`
		}
		if r.status != 200 || !r.at.After(back) || json.Unmarshal(r.body, &body) != nil {
			continue
		}
		if i, ok := rank[body.ID]; ok && !seen[body.ID] {
			seen[body.ID] = true
			order = append(order, i)
		}
	}
	rho := spearman(order)
	t.Logf("outage 10 s (scaled 10 min): %d events held, delivered in %v after the partner came back, peak %d requests/s (limit burst 20 + rate 40/s); arrival order vs publish order: Spearman %.2f over %d events",
		n, at[len(at)-1].Sub(back).Round(100*time.Millisecond), peak, rho, len(order))
	// In arrival order (the retry topics give them back) the rank
	// correlation is about 0; the drain orders them. Measured 0.83–0.90
	// on 2 cores; the bound leaves room for a loaded machine.
	if rho < 0.5 {
		t.Errorf("the backlog did not drain oldest first: arrival order vs publish order has rank correlation %.2f, want ≥ 0.5", rho)
	}
}

// spearman is the rank correlation between the positions of xs (arrival
// order) and its values (publish order), xs holding distinct ranks: 1 when
// they arrive in publish order, about 0 in a random order.
func spearman(xs []int) float64 {
	n := len(xs)
	if n < 2 {
		return 0
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	pos := map[int]int{}
	for i, v := range sorted {
		pos[v] = i
	}
	var d2 float64
	for i, v := range xs {
		d := float64(i - pos[v])
		d2 += d * d
	}
	return 1 - 6*d2/(float64(n)*(float64(n)*float64(n)-1))
}

// TestPartnerDownPastMaxAge: a partner down longer than retry.max_age_sec
// has its deliveries dead-lettered, each saying what happened: the age, the
// open breaker that held it, the connection refused before.
func TestPartnerDownPastMaxAge(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		scaled(c, 60)
		c.Partner.Webhooks.Retry.MaxAge = 4 * time.Second
	})
	rc := newReceiver(t, always(200))
	c := e.tenant("t-gone-long", rc)
	rc.stopListening()
	e.start()
	const n = 20
	var evs []schemas.Event
	for _, id := range idsOf(n, "evt_age_") {
		evs = append(evs, e.event(id, "order.created", `{}`))
	}
	e.publish(evs...)
	testenv.Eventually(t, 60*time.Second, "every delivery dead-lettered", func() bool { return len(e.deadLetters()) == n })
	codes := map[string]int{}
	for _, dl := range e.deadLetters() {
		codes[dl.ReasonCode]++
		if dl.TenantID != c.Tenant.ID || !strings.Contains(dl.Reason, "max age exceeded") || len(dl.Payload) == 0 {
			t.Errorf("dead letter: %+v", dl)
		}
		if dl.ReasonCode != string(ReasonBreakerOpen) && dl.ReasonCode != string(ReasonConnRefused) {
			t.Errorf("reason code %q, want breaker_open or connection_refused: %s", dl.ReasonCode, dl.Reason)
		}
		if dl.ReasonCode == string(ReasonBreakerOpen) && !strings.Contains(dl.Reason, "circuit breaker open") {
			t.Errorf("reason %q does not say the breaker held it", dl.Reason)
		}
		if dl.Attempts > 0 && !strings.Contains(dl.LastError, "connection refused") {
			t.Errorf("last error %q, want connection refused", dl.LastError)
		}
	}
	if codes[string(ReasonBreakerOpen)] == 0 {
		t.Errorf("no dead letter held by the open breaker: %v", codes)
	}
	// The delivery log says the same of every attempt made: refused, by
	// class and in words (holds make no attempt and log none).
	logged := 0
	for _, a := range e.attempts() {
		if a.TenantID != c.Tenant.ID {
			continue
		}
		logged++
		if a.Reason != string(ReasonConnRefused) || a.Error != "connection refused" || a.StatusCode != 0 || a.Outcome == schemas.OutcomeDelivered {
			t.Errorf("delivery log attempt: %+v, want reason connection_refused", a)
		}
	}
	if logged == 0 {
		t.Error("no attempt in the delivery log")
	}
	t.Logf("dead letters by reason code: %v", codes)
}
