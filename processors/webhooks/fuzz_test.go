package webhooks

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// Fuzz targets for every decoder of every topic the processor reads
// (partners.events.v1, the retry topics and the FIFO topic, the DLQ index,
// partners.deliveries.v1) and for the path of any input to the DLQ: none
// may panic, and whatever goes to the DLQ is a valid dead letter. `go test`
// runs their seed corpus; `go test -fuzz FuzzX` explores.

func fuzzProcessor(t testing.TB) *Processor {
	cfg := config.Default()
	cfg.Partner.Webhooks.MaxEventBytes = 4096
	ten := &schemas.Tenant{ID: "tn_fuzz", Status: schemas.StatusActive, Endpoints: []schemas.Endpoint{
		{ID: "ep_all", URL: "https://hooks.example/a", Secrets: []schemas.WebhookSecret{{ID: "s", Secret: benchSecret(1)}}},
		{ID: "ep_filtered", URL: "https://hooks.example/b", Filter: `event.data.total > 10.0`, Secrets: []schemas.WebhookSecret{{ID: "s", Secret: benchSecret(1)}}},
		{ID: "ep_mapped", URL: "https://hooks.example/c", Mapping: &schemas.FieldMapping{Version: 1, Fields: map[string]string{"x": "data.total", "y.z": "id"}},
			Secrets: []schemas.WebhookSecret{{ID: "s", Secret: benchSecret(1)}}},
		{ID: "ep_fifo", URL: "https://hooks.example/d", Ordering: schemas.OrderingFIFO, Secrets: []schemas.WebhookSecret{{ID: "s", Secret: benchSecret(1)}}},
	}}
	p, err := New(Options{Config: cfg.Partner.Webhooks, Kafka: kafka.Cluster{Config: cfg.Kafka}, Tenants: staticTenants{ten},
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkOutputs requires every produced record to be JSON and every DLQ
// record to be a valid dead letter.
func checkOutputs(t *testing.T, p *Processor, recs []*kgo.Record) {
	for _, r := range recs {
		if !json.Valid(r.Value) {
			t.Fatalf("record for %s is not JSON: %q", r.Topic, r.Value)
		}
		if r.Topic == p.names.Topic(schemas.TopicDLQ) {
			if err := schemas.Validate(schemas.KindDeadLetter, r.Value); err != nil {
				t.Fatalf("dead letter violates its schema: %v\n%s", err, r.Value)
			}
		}
		if r.Topic == p.names.Topic(schemas.TopicDLQIndex) {
			if _, err := decodeIndexRecord(r.Value); err != nil {
				t.Fatalf("index record does not decode: %v", err)
			}
		}
	}
}

func FuzzEventRecord(f *testing.F) {
	for _, s := range []string{`{}`, `not json`, `{"schema_version":"1","id":"e1","type":"order.created","occurred_at":"2025-01-01T00:00:00Z","data":{"total":12.5}}`,
		`{"schema_version":"1","id":"e1","type":"spaceship","occurred_at":"2025-01-01T00:00:00Z","data":{}}`,
		`{"schema_version":"1","id":"e1","type":"order.created","occurred_at":"2025-01-01T00:00:00Z","tenant_id":"tn_fuzz","data":{"total":"x"}}`,
		"\x00\xff", `{"id":`} {
		f.Add([]byte(s))
	}
	p := fuzzProcessor(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, ok := fastEvent(b); ok {
			if err := schemas.Validate(schemas.KindEvent, b); err != nil {
				t.Fatalf("the fast path accepts an event the schema refuses (%v): %q", err, b)
			}
		}
		jobs, out := p.fanOut(context.Background(), &kgo.Record{Topic: p.names.Topic(schemas.TopicEvents), Key: []byte("k"), Value: b})
		checkOutputs(t, p, out)
		for _, j := range jobs {
			if j.task.DeliveryID == "" || len(j.task.Body) == 0 || !json.Valid(j.task.Body) {
				t.Fatalf("job without delivery id or JSON body: %+v", j.task)
			}
		}
	})
}

func FuzzRetryRecord(f *testing.F) {
	ok, _ := json.Marshal(Task{SchemaVersion: "1", DeliveryID: "msg_1", TenantID: "tn_fuzz", EndpointID: "ep_all", Body: []byte(`{}`)})
	for _, s := range []string{string(ok), `{}`, `{"delivery_id":"m","tenant_id":"t","endpoint_id":"e","body":"AAEC"}`,
		`{"delivery_id":"m","tenant_id":"t","endpoint_id":"e","body":"e30=","attempts":-1}`, `[1,2]`, "\xff"} {
		f.Add([]byte(s))
	}
	p := fuzzProcessor(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &kgo.Record{Topic: p.names.Retry(1), Key: []byte("k"), Value: b}
		task, err := decodeTask(b)
		if err != nil {
			checkOutputs(t, p, p.malformedTask(context.Background(), r, err))
			return
		}
		// Every way a decoded task can end goes to records that are valid.
		for _, o := range []outcome{
			{kind: rejected, reason: ReasonTenantRemoved, detail: "tenant removed"},
			{kind: attempted, att: Attempt{Class: Permanent, Reason: ReasonHTTPStatus, Err: "HTTP 400", At: time.Now()}},
			{kind: attempted, att: Attempt{Class: Retryable, Reason: ReasonTimeout, Err: "timeout", At: time.Now()}},
			{kind: held, reason: ReasonBreakerOpen, until: time.Now().Add(time.Minute)},
		} {
			j := &job{task: task}
			checkOutputs(t, p, p.outputs(j, o, p.policy.decide(task, o, time.Now()), trace.SpanContext{}))
		}
	})
}

func FuzzIndexRecord(f *testing.F) {
	good, _ := json.Marshal(indexRecord{DeadLetter: schemas.DeadLetter{SchemaVersion: "1", DeliveryID: "msg_1", TenantID: "t",
		EndpointID: "e", Reason: "x", Payload: json.RawMessage(`{}`)}, Key: "msg_1", Status: statusDead, DeadAt: time.Now()})
	for _, s := range []string{string(good), `{}`, `{"key":"k","status":"dead"}`, `{"key":"k","status":"weird"}`, "null", "\x01"} {
		f.Add([]byte(s))
	}
	p := fuzzProcessor(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		x := newDLQIndex(p)
		x.apply(&kgo.Record{Key: []byte("k"), Value: b})
		x.apply(&kgo.Record{Key: []byte("msg_1"), Value: b, Offset: 1})
		x.apply(&kgo.Record{Key: []byte("msg_1"), Value: nil, Offset: 2}) // tombstone
		if _, _, err := x.List(DLQFilter{Status: "all"}); err != nil {
			t.Fatal(err)
		}
		if x.Depth() < 0 {
			t.Fatalf("depth %d", x.Depth())
		}
	})
}

func FuzzDeliveryAttempt(f *testing.F) {
	for _, s := range []string{`{"id":"m/1","delivery_id":"m","attempt":1}`, `{}`, `{"id":1}`, `nope`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, err := decodeAttempt(b); err == nil && a.ID == "" {
			t.Fatal("decoded an attempt without id")
		}
	})
}
