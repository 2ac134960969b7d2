package webhooks

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// phaseStats are the healthy partners' figures of one phase.
type phaseStats struct {
	deliveries int
	rate       float64 // deliveries per second, first to last arrival
	p50, p99   time.Duration
}

// measure computes the end-to-end delay (event occurred_at to arrival) and
// the rate of the deliveries of events whose id starts with prefix.
func measure(t *testing.T, prefix string, rcs ...*receiver) phaseStats {
	var lat []time.Duration
	var first, last time.Time
	for _, rc := range rcs {
		for _, r := range rc.requests() {
			var p struct {
				ID         string    `json:"id"`
				OccurredAt time.Time `json:"occurred_at"`
			}
			if err := json.Unmarshal(r.body, &p); err != nil || !strings.HasPrefix(p.ID, prefix) {
				continue
			}
			lat = append(lat, r.at.Sub(p.OccurredAt))
			if first.IsZero() || r.at.Before(first) {
				first = r.at
			}
			if r.at.After(last) {
				last = r.at
			}
		}
	}
	s := phaseStats{deliveries: len(lat), p50: percentile(lat, 0.5), p99: percentile(lat, 0.99)}
	if d := last.Sub(first).Seconds(); d > 0 {
		s.rate = float64(len(lat)) / d
	}
	return s
}

// TestHangingEndpointIsolation measures two healthy partners' delivery rate
// and p99 (event time to arrival) under a steady publish rate, first alone,
// then, in the same run, with a third partner whose endpoint hangs until
// the timeout. The figures are printed; the test asserts that every healthy
// delivery arrived and that the hanging partner's deliveries took the retry
// path, never a wall-clock threshold.
func TestHangingEndpointIsolation(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		c.Partner.Webhooks.Timeouts = config.Timeouts{Connect: 500 * time.Millisecond, Total: 2 * time.Second}
		c.Partner.Webhooks.Breaker = config.Breaker{ConsecutiveFailures: 5, Open: time.Second}
		c.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 3, BackoffBase: 500 * time.Millisecond, BackoffMultiplier: 2}
	})
	a := newReceiver(t, always(200))
	b := newReceiver(t, always(200))
	hang := newReceiver(t, func(int) (int, map[string]string, bool) { return 0, nil, true })
	e.tenant("t-iso-a", a)
	e.tenant("t-iso-b", b)
	e.start()
	const perPhase, perSecond = 600, 300
	publishSteady := func(prefix string) {
		ids := idsOf(perPhase, prefix)
		tick := time.NewTicker(time.Second / 50)
		defer tick.Stop()
		batch := perSecond / 50
		for i := 0; i < len(ids); i += batch {
			<-tick.C
			var evs []schemas.Event
			for _, id := range ids[i:min(i+batch, len(ids))] {
				evs = append(evs, e.event(id, "order.created", `{"n":1}`))
			}
			e.publish(evs...)
		}
	}
	// Warm-up: group joins and connection pools are not what is measured.
	e.publish(e.event("evt_warm", "order.created", `{}`))
	testenv.Eventually(t, 30*time.Second, "warm-up", func() bool { return a.count() == 1 && b.count() == 1 })

	publishSteady("evt_p0_")
	testenv.Eventually(t, 60*time.Second, "phase 0 delivered", func() bool { return measure(t, "evt_p0_", a, b).deliveries == 2*perPhase })
	alone0 := measure(t, "evt_p0_", a, b)
	publishSteady("evt_p1_")
	testenv.Eventually(t, 60*time.Second, "phase 1 delivered", func() bool { return measure(t, "evt_p1_", a, b).deliveries == 2*perPhase })
	alone := measure(t, "evt_p1_", a, b)

	hc := e.tenant("t-iso-hang", hang)
	publishSteady("evt_p2_")
	testenv.Eventually(t, 60*time.Second, "phase 2 delivered", func() bool { return measure(t, "evt_p2_", a, b).deliveries == 2*perPhase })
	with := measure(t, "evt_p2_", a, b)

	t.Logf("healthy partners alone (run 1):  %4d deliveries, %7.1f/s, p50 %v, p99 %v", alone0.deliveries, alone0.rate, alone0.p50, alone0.p99)
	t.Logf("healthy partners alone (run 2):  %4d deliveries, %7.1f/s, p50 %v, p99 %v", alone.deliveries, alone.rate, alone.p50, alone.p99)
	t.Logf("healthy partners beside a hang:  %4d deliveries, %7.1f/s, p50 %v, p99 %v", with.deliveries, with.rate, with.p50, with.p99)
	t.Logf("noise, alone run 2/run 1: rate %.2f, p99 %.2f", alone.rate/alone0.rate, float64(alone.p99)/float64(alone0.p99))
	t.Logf("with a hang / alone run 2: rate %.2f, p99 %.2f (publish rate %d events/s; hang timeout 2s)",
		with.rate/alone.rate, float64(with.p99)/float64(alone.p99), perSecond)
	for _, rc := range []*receiver{a, b} {
		sameContent(t, "healthy", rc)
	}
	// The hanging partner got some calls (until its breaker opened) and its
	// deliveries moved on through the retry path. Its attempts are logged
	// when they time out (2 s), which can be after the healthy phase ended
	// (without -race it ends sooner), so wait for them.
	outcomes := map[string]int{}
	testenv.Eventually(t, 30*time.Second, "hanging partner's attempts timed out and took the retry path", func() bool {
		clear(outcomes)
		for _, at := range e.attempts() {
			if at.TenantID == hc.Tenant.ID {
				outcomes[at.Outcome]++
			}
		}
		return hang.count() > 0 && outcomes[schemas.OutcomeRetry] > 0
	})
	t.Logf("hanging partner: %d HTTP requests, attempt outcomes %v", hang.count(), outcomes)
}

func hangs(int) (int, map[string]string, bool) { return 0, nil, true }

func (rc *receiver) peakHanging() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.maxHanging
}

// TestTestRouteIsolation: 300 concurrent webhook tests by one tenant
// against a hanging endpoint run at most test_calls_per_tenant at once (the
// rest answer 429 at once) inside the endpoint's lane, so another tenant's
// deliveries all arrive before the first hanging test call even times out.
func TestTestRouteIsolation(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		c.Partner.Webhooks.Timeouts = config.Timeouts{Connect: time.Second, Total: 4 * time.Second}
	})
	hang := newReceiver(t, hangs)
	other := newReceiver(t, always(200))
	// The hanging tenant takes no order events: only test calls reach it.
	h := e.tenant("t-test-hang", hang, "lead.qualified")
	e.tenant("t-test-other", other)
	p := e.start()
	e.publish(e.event("evt_tri_warm", "order.created", `{}`))
	testenv.Eventually(t, 30*time.Second, "warm-up", func() bool { return other.count() == 1 })

	api := &API{P: p}
	ten, _ := e.reg.Get(h.Tenant.ID)
	var mu sync.Mutex
	codes := map[int]int{}
	var firstReturn time.Time
	var wg sync.WaitGroup
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/api/v1/partners/webhooks/test", nil)
			api.Test(rec, req.WithContext(authctx.WithTenant(req.Context(), ten)))
			mu.Lock()
			defer mu.Unlock()
			codes[rec.Code]++
			if rec.Code == 200 && firstReturn.IsZero() {
				firstReturn = time.Now()
			}
		}()
	}
	testenv.Eventually(t, 10*time.Second, "test calls hanging", func() bool { return hang.count() > 0 })
	const n = 50
	var evs []schemas.Event
	for _, id := range idsOf(n, "evt_tri_") {
		evs = append(evs, e.event(id, "order.created", `{}`))
	}
	e.publish(evs...)
	testenv.Eventually(t, 60*time.Second, "the other tenant's deliveries", func() bool { return other.count() == n+1 })
	othersDone := time.Now()
	wg.Wait()
	if !othersDone.Before(firstReturn) {
		t.Errorf("the other tenant's deliveries finished %v after the first hanging test call returned: they waited for the hang",
			othersDone.Sub(firstReturn))
	}
	if peak := hang.peakHanging(); peak > e.cfg.Partner.Webhooks.TestPerTenant {
		t.Errorf("%d test calls hung on the endpoint at once, want at most %d", peak, e.cfg.Partner.Webhooks.TestPerTenant)
	}
	if codes[429] < 300-e.cfg.Partner.Webhooks.TestPerTenant || codes[200]+codes[429] != 300 {
		t.Errorf("answers of 300 concurrent test calls: %v", codes)
	}
	t.Logf("300 concurrent test calls: %v; the other tenant's %d deliveries done %v before the first hanging call returned",
		codes, n, firstReturn.Sub(othersDone).Round(time.Millisecond))
}

// TestTenantShareOfConcurrency: a tenant with several hanging endpoints
// holds at most per_tenant_concurrency requests in flight, however many
// lanes it has, while another tenant's deliveries go on.
func TestTenantShareOfConcurrency(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		c.Partner.Webhooks.Concurrency = 40
		c.Partner.Webhooks.PerTenant = 10
		c.Partner.Webhooks.PerEndpoint = 8
		c.Partner.Webhooks.Timeouts = config.Timeouts{Connect: time.Second, Total: 3 * time.Second}
	})
	hang := newReceiver(t, hangs)
	other := newReceiver(t, always(200))
	h := e.tenant("t-share-hang", hang)
	e.tenant("t-share-other", other)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Three endpoints of the same tenant, all hanging: 3 lanes of 8.
	patch := registry.Patch{}
	for range 2 {
		patch.Endpoints = append(patch.Endpoints, registry.EndpointPatch{URL: hang.url()})
	}
	if _, err := e.writer.Update(ctx, h.Tenant.ID, patch); err != nil {
		t.Fatal(err)
	}
	e.start()
	const n = 40
	var evs []schemas.Event
	for _, id := range idsOf(n, "evt_share_") {
		evs = append(evs, e.event(id, "order.created", `{}`))
	}
	e.publish(evs...)
	testenv.Eventually(t, 60*time.Second, "the other tenant's deliveries", func() bool { return other.count() == n })
	testenv.Eventually(t, 30*time.Second, "the hanging tenant at its share", func() bool { return hang.peakHanging() >= 1 })
	if peak := hang.peakHanging(); peak > 10 {
		t.Errorf("the tenant had %d requests in flight at once, more than its share per_tenant_concurrency = 10 (3 endpoints × 8 per endpoint = 24)", peak)
	}
	t.Logf("hanging tenant: at most %d requests in flight (share 10, its lanes allow 24)", hang.peakHanging())
}
