package webhooks

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// okCount is how many requests of each webhook-id rc answered 2xx.
func okCount(rc *receiver) map[string]int {
	out := map[string]int{}
	for _, r := range rc.requests() {
		if r.status >= 200 && r.status < 300 {
			out[r.id]++
		}
	}
	return out
}

func (e *env) listed(f DLQFilter) []DLQEntry {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f.Limit = 10000
	es, _, err := e.p.ListDLQ(ctx, f)
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

func (e *env) replay(req ReplayRequest) ReplayResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := e.p.Replay(ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// TestReplayIdempotent: replaying the same DLQ selection twice sends each
// delivery once; unfiltered replays of deliveries that keep failing never
// grow the DLQ (one entry per delivery, and a delivery that failed again
// after a replay is left out of the next unfiltered replay); recover sends
// an endpoint's dead letters since a time and only those; the depth gauge
// follows.
func TestReplayIdempotent(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		c.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 2, BackoffBase: 100 * time.Millisecond, BackoffMultiplier: 2}
	})
	rc := newReceiver(t, always(500))
	c := e.tenant("t-replay", rc)
	ep := c.Tenant.Endpoints[0].ID
	p := e.start()
	const n = 10
	publish := func(prefix string) {
		var evs []schemas.Event
		for _, id := range idsOf(n, prefix) {
			evs = append(evs, e.event(id, "order.created", `{}`))
		}
		e.publish(evs...)
	}
	publish("evt_rp_a_")
	testenv.Eventually(t, 30*time.Second, "first batch dead-lettered", func() bool { return len(e.listed(DLQFilter{Tenant: c.Tenant.ID})) == n })
	time.Sleep(50 * time.Millisecond)
	between := time.Now()
	publish("evt_rp_b_")
	testenv.Eventually(t, 30*time.Second, "second batch dead-lettered", func() bool { return len(e.listed(DLQFilter{Tenant: c.Tenant.ID})) == 2*n })
	depth := func() float64 { return float64(p.index.Depth()) }
	if depth() != 2*n {
		t.Fatalf("DLQ depth %v, want %d", depth(), 2*n)
	}

	// The partner is back. Recover since the second batch: only those.
	rc.setResponse(always(200))
	res, err := p.Recover(context.Background(), ep, between)
	if err != nil || res.Replayed != n {
		t.Fatalf("recover since T: %+v, %v", res, err)
	}
	testenv.Eventually(t, 30*time.Second, "second batch delivered", func() bool { return len(okCount(rc)) == n })
	for id := range okCount(rc) {
		found := false
		for _, ev := range idsOf(n, "evt_rp_b_") {
			found = found || id == WebhookID(ev, ep)
		}
		if !found {
			t.Errorf("recover since T delivered %s, which was dead-lettered before T", id)
		}
	}
	testenv.Eventually(t, 30*time.Second, "recovered entries marked delivered", func() bool {
		return len(e.listed(DLQFilter{Tenant: c.Tenant.ID, Status: statusDelivered})) == n && depth() == n
	})

	// The partner fails again. Unfiltered replays: the deliveries fail
	// again (one entry each, replays 1), and the next unfiltered replays
	// leave them out: the DLQ does not grow, whatever the number of calls.
	rc.setResponse(always(500))
	if res := e.replay(ReplayRequest{}); res.Replayed != n {
		t.Fatalf("first unfiltered replay: %+v", res)
	}
	testenv.Eventually(t, 30*time.Second, "replayed deliveries failed again", func() bool {
		es := e.listed(DLQFilter{Tenant: c.Tenant.ID})
		for _, x := range es {
			if x.Replays != 1 {
				return false
			}
		}
		return len(es) == n
	})
	for i := 0; i < 5; i++ {
		if res := e.replay(ReplayRequest{}); res.Replayed != 0 {
			t.Fatalf("unfiltered replay %d after a replay sent %d again", i+2, res.Replayed)
		}
	}
	if all := e.listed(DLQFilter{Status: "all"}); len(all) != 2*n || depth() != n {
		t.Fatalf("DLQ has %d entries (depth %v) after 6 unfiltered replays, want %d (depth %d)", len(all), depth(), 2*n, n)
	}
	rc.setResponse(always(200))

	// Replaying the same selection twice sends each delivery once.
	sel := ReplayRequest{Filter: DLQFilter{Tenant: c.Tenant.ID, EventType: "order.created"}}
	first, second := e.replay(sel), e.replay(sel)
	if first.Replayed != n || second.Replayed != 0 {
		t.Fatalf("replaying one selection twice: %d then %d, want %d then 0", first.Replayed, second.Replayed, n)
	}
	testenv.Eventually(t, 30*time.Second, "every delivery delivered", func() bool { return len(okCount(rc)) == 2*n })
	time.Sleep(time.Second) // anything sent twice would have arrived by now
	for id, k := range okCount(rc) {
		if k != 1 {
			t.Errorf("%s delivered %d times after replays", id, k)
		}
	}
	testenv.Eventually(t, 30*time.Second, "the DLQ is empty", func() bool { return depth() == 0 && len(e.listed(DLQFilter{})) == 0 })
	// --force sends again.
	if res := e.replay(ReplayRequest{Filter: DLQFilter{Tenant: c.Tenant.ID}, Force: true}); res.Replayed != 2*n {
		t.Fatalf("forced replay: %+v", res)
	}
	testenv.Eventually(t, 30*time.Second, "forced replay delivered again", func() bool {
		for _, k := range okCount(rc) {
			if k != 2 {
				return false
			}
		}
		return true
	})

	// The admin API: paged listing, replay with a delivery id, recover of
	// an unknown endpoint.
	api := &API{P: p}
	rec := call(t, api.List, httptest.NewRequest("GET", "/api/v1/dlq?status=all&limit=7", nil))
	var page struct {
		DeadLetters []map[string]any `json:"dead_letters"`
		Next        string           `json:"next_page_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || rec.Code != 200 || len(page.DeadLetters) != 7 || page.Next == "" {
		t.Fatalf("GET /api/v1/dlq?limit=7: %d %s", rec.Code, rec.Body)
	}
	seen := map[string]bool{}
	pages := 0
	for tok := ""; ; pages++ {
		rec := call(t, api.List, httptest.NewRequest("GET", "/api/v1/dlq?status=all&limit=7&page_token="+tok, nil))
		page.Next = ""
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || rec.Code != 200 {
			t.Fatalf("page %d: %d %s", pages, rec.Code, rec.Body)
		}
		for _, d := range page.DeadLetters {
			id := d["delivery_id"].(string)
			if seen[id] {
				t.Fatalf("%s listed on two pages", id)
			}
			seen[id] = true
		}
		if page.Next == "" {
			break
		}
		tok = page.Next
	}
	if len(seen) != 2*n || pages != 2 {
		t.Errorf("paging listed %d dead letters on %d pages, want %d on 3", len(seen), pages+1, 2*n)
	}
	rec = call(t, api.Recover, httptest.NewRequest("POST", "/api/v1/dlq/recover?endpoint=ep_nope&since=1h", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("recover of an unknown endpoint: %d %s", rec.Code, rec.Body)
	}
	rec = call(t, api.List, httptest.NewRequest("GET", "/api/v1/dlq?page_token=garbage", nil))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "page_token") {
		t.Errorf("bad page token: %d %s", rec.Code, rec.Body)
	}
	rec = call(t, api.Replay, httptest.NewRequest("POST", "/api/v1/dlq/replay?tenant="+c.Tenant.ID+"&delivery_id=msg_none&delivery_id=msg_other&force=true", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"replayed": 0`) {
		t.Errorf("replay of unknown delivery ids: %d %s", rec.Code, rec.Body)
	}
	rec = call(t, api.Recover, httptest.NewRequest("POST", "/api/v1/dlq/recover?endpoint="+ep+"&since=1h", nil))
	if rec.Code != 200 {
		t.Errorf("recover: %d %s", rec.Code, rec.Body)
	}
	rec = call(t, api.List, httptest.NewRequest("GET", "/api/v1/dlq?reason=nonsense", nil))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("unknown reason code: %d %s", rec.Code, rec.Body)
	}
}

// TestReplayRendersWithCurrentSettings: deliveries dead-lettered because the
// endpoint's filter did not compile are replayed through the endpoint's
// current filter and mapping: a fixed filter that selects the event
// delivers the body its current mapping renders; one that no longer selects
// it drops the dead letter (state dropped), sending nothing.
func TestReplayRendersWithCurrentSettings(t *testing.T) {
	e := newEnv(t, false, nil)
	rc := newReceiver(t, always(200))
	c := e.tenant("t-rerender", rc)
	ep := c.Tenant.Endpoints[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	update := func(filter string, m *schemas.FieldMapping) {
		t.Helper()
		if _, err := e.writer.Update(ctx, c.Tenant.ID, registry.Patch{Endpoints: []registry.EndpointPatch{{ID: ep.ID, URL: ep.URL, Filter: filter, Mapping: m}}}); err != nil {
			t.Fatal(err)
		}
	}
	update("event.data.total >", nil) // does not compile
	p := e.start()
	e.publish(e.event("evt_rr_big", "order.created", `{"total":50}`), e.event("evt_rr_small", "order.created", `{"total":5}`))
	testenv.Eventually(t, 30*time.Second, "both dead-lettered as filter errors", func() bool {
		es := e.listed(DLQFilter{Tenant: c.Tenant.ID, Reason: string(ReasonFilter)})
		return len(es) == 2
	})
	update("double(event.data.total) > 10.0", &schemas.FieldMapping{Version: 1, Fields: map[string]string{"order_total": "data.total"}})
	if res, err := p.Replay(ctx, ReplayRequest{Filter: DLQFilter{Tenant: c.Tenant.ID}}); err != nil || res.Replayed != 2 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	testenv.Eventually(t, 30*time.Second, "the selected event delivered, the other dropped", func() bool {
		return rc.count() == 1 && len(e.listed(DLQFilter{Tenant: c.Tenant.ID, Status: statusDropped})) == 1 &&
			len(e.listed(DLQFilter{Tenant: c.Tenant.ID, Status: statusDelivered})) == 1
	})
	if got := string(rc.requests()[0].body); got != `{"order_total":50}` {
		t.Errorf("replayed body %s, want the current mapping's rendering", got)
	}
	if id := rc.requests()[0].id; id != WebhookID("evt_rr_big", ep.ID) {
		t.Errorf("replayed webhook-id %s", id)
	}
}
