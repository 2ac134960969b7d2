package webhooks

import (
	"context"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestFIFOEndpointOrder: an endpoint with ordering "fifo" gets its messages
// one at a time in the order of the events (one events partition here, so
// that order is defined): a message that fails its first attempt holds the
// next ones until it is delivered, one dead-lettered lets the next go, and
// nothing overlaps. An unordered endpoint beside it is not held back.
func TestFIFOEndpointOrder(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		c.Kafka.Partitions = 1
		c.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 3, BackoffBase: 300 * time.Millisecond, BackoffMultiplier: 2}
	})
	const n = 12
	ids := idsOf(n, "evt_fifo_")
	rc := newReceiver(t, always(200))
	plain := newReceiver(t, always(200))
	c := e.tenant("t-fifo", rc)
	e.tenant("t-fifo-plain", plain)
	ep := c.Tenant.Endpoints[0]
	// Message 3 fails its first attempt; message 7 is refused for good
	// (400): dead-lettered, the next goes on.
	failing, rejected := WebhookID(ids[3], ep.ID), WebhookID(ids[7], ep.ID)
	rc.mu.Lock()
	rc.failFirst = func(id string) bool { return id == failing }
	rc.byID = map[string]int{rejected: 400}
	rc.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fifo := schemas.OrderingFIFO
	if _, err := e.writer.Update(ctx, c.Tenant.ID, registry.Patch{Endpoints: []registry.EndpointPatch{{ID: ep.ID, URL: ep.URL, Ordering: &fifo}}}); err != nil {
		t.Fatal(err)
	}
	e.start()
	var evs []schemas.Event
	for _, id := range ids {
		evs = append(evs, e.event(id, "order.created", `{}`))
	}
	e.publish(evs...)
	testenv.Eventually(t, 60*time.Second, "every message delivered or dead-lettered, in order", func() bool {
		return len(sameContent(t, "fifo", rc)) == n && len(e.deadLetters()) == 1
	})
	testenv.Eventually(t, 30*time.Second, "the unordered endpoint", func() bool { return plain.count() == n })
	// Requests by message, in event order: each starts after the previous
	// message's last request, and requests never overlap.
	reqs := rc.requests()
	pos := map[string]int{}
	for i, id := range ids {
		pos[WebhookID(id, ep.ID)] = i
	}
	last := -1
	for i, r := range reqs {
		k := pos[r.id]
		if k < last {
			t.Fatalf("request %d is message %d after message %d: out of order", i, k, last)
		}
		last = k
	}
	if got := len(reqs); got != n+1 {
		t.Errorf("%d requests for %d messages with one failed first attempt", got, n)
	}
	dl := e.deadLetters()[0]
	if dl.DeliveryID != rejected || dl.ReasonCode != string(ReasonHTTPStatus) || dl.LastStatus != 400 {
		t.Errorf("dead letter %+v, want message 7 refused with 400", dl)
	}
}
