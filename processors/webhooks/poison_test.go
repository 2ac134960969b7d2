package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestPoisonRetryRecords puts on the first retry topic what once crashed or
// silently lost deliveries: a task whose body is not JSON for an unknown
// tenant (it panicked the process, which then crash-looped), bytes that are
// no task at all, and a delivery whose retry would not fit in a record
// (MESSAGE_TOO_LARGE, then the offset committed and nothing kept). Each
// lands in the DLQ with its reason and the partition goes on: a good task
// behind them is delivered.
func TestPoisonRetryRecords(t *testing.T) {
	e := newEnv(t, false, func(c *config.Config) {
		c.Kafka.Partitions = 1 // everything behind the poison, in one partition
		c.Partner.Webhooks.MaxRecordBytes = 900_000
	})
	good := newReceiver(t, always(200))
	failing := newReceiver(t, always(503))
	g := e.tenant("t-poison-good", good)
	f := e.tenant("t-poison-failing", failing)
	e.start()
	task := func(id string, c *registry.Created, body []byte) *kgo.Record {
		b, _ := json.Marshal(Task{SchemaVersion: "1", DeliveryID: id, TenantID: c.Tenant.ID, EndpointID: c.Tenant.Endpoints[0].ID,
			EventID: "evt_" + id, EventType: "order.created", Stage: 1, Attempts: 1, Charged: 1, NotBefore: time.Now(), Since: time.Now(), Body: body})
		return &kgo.Record{Topic: e.topic(schemas.TopicRetryPrefix + "1"), Key: []byte(id), Value: b}
	}
	notJSON, _ := json.Marshal(Task{SchemaVersion: "1", DeliveryID: "msg_notjson", TenantID: "tn_unknown", EndpointID: "ep_unknown",
		EventID: "evt_x", EventType: "order.created", Stage: 1, Attempts: 1, NotBefore: time.Now(), Body: []byte("\x00not json\xff")})
	big := []byte(`{"blob":"` + strings.Repeat("x", 700_000) + `"}`)
	e.publishRaw(
		&kgo.Record{Topic: e.topic(schemas.TopicRetryPrefix + "1"), Key: []byte("msg_notjson"), Value: notJSON},
		&kgo.Record{Topic: e.topic(schemas.TopicRetryPrefix + "1"), Key: []byte("garbage"), Value: []byte("{\"delivery_id\": 12, ")},
		task("msg_big", f, big),
		task("msg_good", g, []byte(`{"ok":true}`)),
	)
	testenv.Eventually(t, 60*time.Second, "good task delivered and 3 dead letters", func() bool {
		return good.count() == 1 && len(e.deadLetters()) == 3
	})
	got := map[string]schemas.DeadLetter{}
	for _, dl := range e.deadLetters() {
		got[dl.ReasonCode] = dl
	}
	if dl, ok := got[string(ReasonTenantRemoved)]; !ok || dl.DeliveryID != "msg_notjson" || len(dl.Raw) == 0 {
		t.Errorf("not-JSON body for an unknown tenant: %+v", dl)
	}
	if dl, ok := got[string(ReasonMalformedRecord)]; !ok || len(dl.Raw) == 0 && len(dl.Payload) == 0 {
		t.Errorf("undecodable retry record: %+v", dl)
	}
	if dl, ok := got[string(ReasonPayloadTooLarge)]; !ok || dl.DeliveryID != "msg_big" || len(dl.Payload) != len(big) || failing.count() != 1 {
		t.Errorf("too large for a retry record: %+v (payload %d bytes, %d attempts)", dl.Reason, len(dl.Payload), failing.count())
	}
}

// TestMappingsValidatedAtWriteTime: the registry refuses a mapping with
// 20,000 fields (it once rendered a 4 GB body) and other malformed
// mappings when they are written, and the renderer bounds what a valid
// mapping produces.
func TestMappingsValidatedAtWriteTime(t *testing.T) {
	e := newEnv(t, false, nil)
	rc := newReceiver(t, always(200))
	c := e.tenant("t-mapping", rc)
	ep := c.Tenant.Endpoints[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	huge := &schemas.FieldMapping{Version: 1, Fields: map[string]string{}}
	for i := range 20_000 {
		huge.Fields[fmt.Sprintf("f%05d", i)] = "data"
	}
	for name, m := range map[string]*schemas.FieldMapping{
		"20,000 fields": huge,
		"version 9":     {Version: 9, Fields: map[string]string{"a": "id"}},
		"empty path":    {Version: 1, Fields: map[string]string{"a": ""}},
		"value+object":  {Version: 1, Fields: map[string]string{"a": "id", "a.b": "type"}},
		"too deep":      {Version: 1, Fields: map[string]string{strings.Repeat("a.", 20) + "b": "id"}},
	} {
		_, err := e.writer.Update(ctx, c.Tenant.ID, registry.Patch{Endpoints: []registry.EndpointPatch{{ID: ep.ID, URL: ep.URL, Mapping: m}}})
		if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), "mapping") {
			t.Errorf("%s: written (%v)", name, err)
		}
	}
	// A valid mapping copying a large field many times is bounded.
	m := &schemas.FieldMapping{Version: 1, Fields: map[string]string{}}
	for i := range schemas.MaxMappingFields {
		m.Fields[fmt.Sprintf("copy%03d", i)] = "data"
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	ev := schemas.Event{ID: "e", Type: "order.created", OccurredAt: time.Unix(0, 0),
		Data: json.RawMessage(`{"blob":"` + strings.Repeat("y", 100_000) + `"}`)}
	start := time.Now()
	if _, err := Render(&ev, schemas.Endpoint{Mapping: m}); !errors.Is(err, ErrRender) || !strings.Contains(err.Error(), "max_payload_bytes") {
		t.Fatalf("256 copies of a 100 KB field: %v", err)
	}
	t.Logf("a mapping that would render 25 MB refused in %v", time.Since(start))
}
