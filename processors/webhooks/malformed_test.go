package webhooks

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestMalformedEventsDeadLettered publishes a bad-JSON, a schema-invalid, an
// unknown-type and an oversized event between good ones: each reaches the
// DLQ with its reason and the good events are delivered.
func TestMalformedEventsDeadLettered(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) { c.Partner.Webhooks.MaxEventBytes = 4096 })
	rc := newReceiver(t, always(200))
	e.tenant("t-malformed", rc)
	e.start()
	good := func(id string) *kgo.Record {
		b, _ := json.Marshal(e.event(id, "order.created", `{}`))
		return &kgo.Record{Topic: e.topic(schemas.TopicEvents), Key: []byte(id), Value: b}
	}
	raw := func(key, v string) *kgo.Record {
		return &kgo.Record{Topic: e.topic(schemas.TopicEvents), Key: []byte(key), Value: []byte(v)}
	}
	unknown, _ := json.Marshal(e.event("evt_unknown", "spaceship.launched", `{}`))
	big, _ := json.Marshal(e.event("evt_big", "order.created", `{"blob":"`+strings.Repeat("x", 5000)+`"}`))
	e.publishRaw(good("evt_good_1"), raw("bad-json", `{"id": "evt_x", "type": `),
		raw("invalid", `{"schema_version":"1","id":"evt_inv","type":"order.created","occurred_at":"yesterday","data":{}}`),
		raw("unknown", string(unknown)), raw("big", string(big)), good("evt_good_2"))
	testenv.Eventually(t, 30*time.Second, "good events delivered and 4 dead letters", func() bool {
		return rc.count() == 2 && len(e.deadLetters()) == 4
	})
	want := map[string]string{"bad-json": "malformed event: not JSON", "invalid": "malformed event: event: at /occurred_at",
		"evt_unknown": "unknown event type: spaceship.launched", "big": "oversized event"}
	for _, r := range e.readAll(e.topic(schemas.TopicDLQ)) {
		var dl schemas.DeadLetter
		_ = json.Unmarshal(r.Value, &dl)
		prefix, ok := want[string(r.Key)]
		if !ok || !strings.HasPrefix(dl.Reason, prefix) {
			t.Errorf("dead letter %s: reason %q, want prefix %q", r.Key, dl.Reason, prefix)
		}
		if dl.Attempts != 0 || (len(dl.Raw) == 0 && len(dl.Payload) == 0) {
			t.Errorf("dead letter %s keeps no input: %+v", r.Key, dl)
		}
		delete(want, string(r.Key))
	}
	if len(want) != 0 {
		t.Errorf("missing dead letters: %v", want)
	}
}

// TestCircuitBreaker: after consecutive failures the breaker opens and
// deliveries are held without calling the endpoint and without consuming an
// attempt; a half-open probe to the recovered endpoint closes it and every
// delivery arrives.
func TestCircuitBreaker(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		c.Partner.Webhooks.Breaker = config.Breaker{ConsecutiveFailures: 2, Open: time.Second}
		c.Partner.Webhooks.Retry = config.Retry{MaxAttempts: 6, BackoffBase: 300 * time.Millisecond, BackoffMultiplier: 2}
	})
	rc := newReceiver(t, always(503))
	c := e.tenant("t-breaker", rc)
	p := e.start()
	const n = 10
	var evs []schemas.Event
	for _, id := range idsOf(n, "evt_cb_") {
		evs = append(evs, e.event(id, "order.created", `{}`))
	}
	e.publish(evs...)
	held := func() float64 { return testutil.ToFloat64(p.m.held.WithLabelValues(string(ReasonBreakerOpen))) }
	testenv.Eventually(t, 30*time.Second, "deliveries held while open", func() bool { return held() > 0 })
	rc.setResponse(always(200))
	testenv.Eventually(t, 60*time.Second, "all delivered after recovery", func() bool {
		return len(sameContent(t, "breaker", rc)) == n
	})
	testenv.Eventually(t, 10*time.Second, "breaker closed", func() bool { return p.breakerState(c.Tenant.Endpoints[0].ID) == "closed" })
	if dls := e.deadLetters(); len(dls) != 0 {
		t.Errorf("dead letters: %+v", dls)
	}
	// Every logged attempt is an HTTP request the receiver saw: holds are
	// not attempts (the log commits a moment after the last response).
	testenv.Eventually(t, 20*time.Second, "attempt log complete", func() bool {
		all := e.attempts()
		for _, a := range all {
			if a.Outcome == schemas.OutcomeSkipped {
				t.Errorf("an attempt was logged as skipped: %+v", a)
			}
		}
		return len(all) == rc.count()
	})
	t.Logf("%v holds while the breaker was open, %d HTTP requests for %d deliveries", held(), rc.count(), n)
}

// TestWebhookTestRoute: the tenant's test call sends one signed partner.test
// webhook to each endpoint and reports the outcome; it needs a tenant key.
func TestWebhookTestRoute(t *testing.T) {
	e := newEnv(t, false, nil)
	rc := newReceiver(t, always(200))
	c := e.tenant("t-test-route", rc)
	p, err := New(Options{Config: e.cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: e.brokers}, Tenants: e.reg, Log: e.log, TracerProvider: e.tp})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	api := &API{P: p}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/v1/partners/webhooks/test", nil)
	api.Test(rec, req)
	if rec.Code != 403 {
		t.Fatalf("without a tenant: %d, want 403", rec.Code)
	}
	ten, _ := e.reg.Get(c.Tenant.ID)
	rec = httptest.NewRecorder()
	api.Test(rec, req.WithContext(authctx.WithTenant(req.Context(), ten)))
	var out struct {
		Results []TestResult `json:"results"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 || len(out.Results) != 1 {
		t.Fatalf("test route: %d %s", rec.Code, rec.Body)
	}
	r := out.Results[0]
	if r.Outcome != schemas.OutcomeDelivered || r.StatusCode != 200 || rc.count() != 1 || rc.requests()[0].id != r.WebhookID {
		t.Fatalf("test result %+v, receiver got %d", r, rc.count())
	}
	verifyAll(t, "test route", rc, c.WebhookSecret)
	if ev := rc.requests()[0].header.Get("X-Partner-Event"); ev != "partner.test" {
		t.Errorf("X-Partner-Event %q", ev)
	}
}
