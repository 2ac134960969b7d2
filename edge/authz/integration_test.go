package authz_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/xds/xdstest"
	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestAdminAPIChangesReachTheEdge runs the plugin on the registry of the
// test brokers (real Kafka with PARTNERS_TEST_KAFKA) and changes the tenant
// through the admin API over HTTP: suspension and key rotation apply to the
// very next Check; the touchpoint lands on the topic with the trace.
func TestAdminAPIChangesReachTheEdge(t *testing.T) {
	cfg := testenv.Config(t)
	var logs testenv.LogBuffer
	log := logs.Logger(t)
	admin := xdstest.Start(t, cfg, log, xdstest.Options{KeyOverlap: 0})
	prod, err := kafka.NewClient(cfg.Kafka, testenv.Brokers(t), log)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: admin.Registry, Producer: prod,
		Names: kafka.Names{Prefix: cfg.Kafka.TopicPrefix}, Log: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	p := &plugin{t: t, cfg: cfg, client: serve(t, srv)}

	c := admin.Create(registry.CreateRequest{Name: "Edge Partner", Tier: schemas.TierStandard})
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	req := func(key string) envoyRequest {
		return envoyRequest{path: "/api/v1/partners/orders?uid=user-1&utm_source=partner-site", headers: map[string]string{
			"authorization": "Bearer " + key, "traceparent": "00-" + traceID + "-b7ad6b7169203331-01"}}
	}
	if s := status(p.check(req(c.APIKey))); s != 200 {
		t.Fatalf("new tenant: status %d", s)
	}

	start := time.Now()
	admin.Suspend(c.ID)
	if s := status(p.check(req(c.APIKey))); s != 403 {
		t.Fatalf("first Check after the suspension returned: status %d, want 403", s)
	}
	t.Logf("revocation: suspend request to a refused Check in %v (cache TTL %v)", time.Since(start).Round(time.Millisecond), cfg.Partner.Gateway.TenantResolutionTTL)

	admin.Activate(c.ID)
	if s := status(p.check(req(c.APIKey))); s != 200 {
		t.Fatalf("after activation: status %d", s)
	}
	newKey := admin.RotateKey(c.ID)
	if s := status(p.check(req(c.APIKey))); s != 403 {
		t.Fatalf("old key after rotation without overlap: status %d, want 403", s)
	}
	if s := status(p.check(req(newKey))); s != 200 {
		t.Fatalf("new key: status %d", s)
	}

	// The touchpoints are on the topic with the trace context.
	topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTouchpoints)
	cons, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers(t)...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < 3 && ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	if len(got) != 3 { // the three allowed Checks; denied ones yield none
		t.Fatalf("%d touchpoints on %s, want 3", len(got), topic)
	}
	for _, r := range got {
		var tp schemas.Touchpoint
		if err := json.Unmarshal(r.Value, &tp); err != nil {
			t.Fatal(err)
		}
		if tp.PartnerID != c.ID || tp.UserID != "user-1" || tp.UTMSource != "partner-site" || tp.TraceID != traceID {
			t.Fatalf("touchpoint %+v", tp)
		}
		if err := schemas.Validate("touchpoint", r.Value); err != nil {
			t.Fatalf("touchpoint breaks its schema: %v", err)
		}
		if got := traceOf(kafka.Extract(context.Background(), r)); got != traceID {
			t.Fatalf("record trace %q, want %q", got, traceID)
		}
	}
	if strings.Contains(logs.String(), c.APIKey) || strings.Contains(logs.String(), newKey) {
		t.Fatal("an API key reached the logs")
	}
}
