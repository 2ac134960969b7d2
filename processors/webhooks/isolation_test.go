package webhooks

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
