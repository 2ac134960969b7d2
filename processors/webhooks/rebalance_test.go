package webhooks

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestRebalanceBetweenInstances runs two processor instances in one group,
// stops one in the middle of the stream (its partitions move to the other,
// open transactions abort), and checks every delivery arrived at least once
// with one body per webhook-id.
func TestRebalanceBetweenInstances(t *testing.T) {
	e := newEnv(t, false, nil)
	rcs := []*receiver{newReceiver(t, always(200)), newReceiver(t, always(200))}
	var eps []string
	for i, rc := range rcs {
		eps = append(eps, e.tenant("t-rebalance-"+string(rune('a'+i)), rc).Tenant.Endpoints[0].ID)
	}
	run := func(inst string) (stop func()) {
		p, err := New(Options{Config: e.cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: e.brokers}, Tenants: e.reg, Log: e.log, TracerProvider: e.tp, InstanceID: inst})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Run(ctx); err != nil {
				t.Errorf("instance %s: %v", inst, err)
			}
		}()
		var once sync.Once
		stop = func() {
			once.Do(func() {
				cancel()
				wg.Wait()
				p.Close()
			})
		}
		t.Cleanup(stop)
		return stop
	}
	stopA := run("a")
	run("b")
	const n = 1500
	ids := idsOf(n, "evt_rb_")
	go func() {
		for i := 0; i < n; i += 50 {
			var evs []schemas.Event
			for _, id := range ids[i:min(i+50, n)] {
				evs = append(evs, e.event(id, "order.created", `{"i":"`+id+`"}`))
			}
			e.publish(evs...)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	total := func() int { return rcs[0].count() + rcs[1].count() }
	testenv.Eventually(t, 60*time.Second, "stream under way", func() bool { return total() > n/2 })
	stopA()
	testenv.Eventually(t, 90*time.Second, "every delivery after the rebalance", func() bool {
		return len(sameContent(t, "a", rcs[0])) == n && len(sameContent(t, "b", rcs[1])) == n
	})
	for i, rc := range rcs {
		by := sameContent(t, "rebalance", rc)
		for _, id := range ids {
			if _, ok := by[WebhookID(id, eps[i])]; !ok {
				t.Fatalf("event %s never reached endpoint %d", id, i)
			}
		}
	}
	t.Logf("%d requests for %d deliveries across the rebalance", total(), 2*n)
}
