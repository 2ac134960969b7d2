package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/registry/registrytest"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores()...)
}

func startRegistry(t testing.TB, cfg *config.Config, brokers []string, log *slog.Logger) *registry.Registry {
	return registrytest.Start(t, cfg, brokers, log)
}

func newWriter(cfg *config.Config, reg *registry.Registry, prod registry.Producer) *registry.Writer {
	return registrytest.Writer(cfg, reg, prod, time.Hour)
}

// TestLifecycleRebuildsOnSecondRegistry runs create → suspend → rotate key on
// the brokers under test, then checks a registry started afterwards rebuilds
// the same state from the compacted topic.
func TestLifecycleRebuildsOnSecondRegistry(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	var logs testenv.LogBuffer
	log := logs.Logger(t)
	brokers, cl := testenv.Kafka(t, cfg)
	first := startRegistry(t, cfg, brokers, log)
	w := newWriter(cfg, first, cl)
	ctx := context.Background()

	created, err := w.Create(ctx, registry.CreateRequest{Name: "Acme", Tier: "sandbox", WebhookURL: "http://127.0.0.1:9999/hook", Events: []string{"order.created"}})
	if err != nil {
		t.Fatal(err)
	}
	id := created.Tenant.ID
	if !strings.HasPrefix(created.APIKey, "pk_sbx_") || !strings.HasPrefix(created.WebhookSecret, "whsec_") {
		t.Fatalf("credentials have wrong shape: key prefix %q", created.APIKey[:7])
	}
	if got, ok := first.ByKeyHash(apikey.Hash(cfg.Partner.Keys.Pepper, created.APIKey), time.Now()); !ok || got.ID != id {
		t.Fatal("new key does not resolve to the tenant")
	}
	if l := first.List(); len(l) != 1 || l[0].Version != 1 {
		t.Fatalf("List after create: %d tenants", len(l))
	}
	if _, err := w.SetStatus(ctx, id, schemas.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	_, newKey, err := w.RotateKey(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, newSecret, err := w.RotateSecret(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if l := first.List(); len(l) != 1 || l[0].ID != id || l[0].Version != 4 || l[0].Status != schemas.StatusSuspended {
		t.Fatalf("List after the changes: %d tenants, want the tenant at version 4, suspended", len(l))
	}
	want, _ := first.Get(id)
	if want.Version != 4 || want.Status != schemas.StatusSuspended || len(want.Keys) != 2 || len(want.Endpoints[0].Secrets) != 2 {
		t.Fatalf("unexpected state after lifecycle: version %d status %s keys %d", want.Version, want.Status, len(want.Keys))
	}

	second := startRegistry(t, cfg, brokers, log)
	got, ok := second.Get(id)
	if !ok {
		t.Fatal("second registry lacks the tenant")
	}
	if got.Version != want.Version || got.Status != want.Status || got.Name != want.Name || len(got.Keys) != len(want.Keys) {
		t.Fatalf("second registry state differs: got v%d %s, want v%d %s", got.Version, got.Status, want.Version, want.Status)
	}
	for _, k := range []string{created.APIKey, newKey} {
		if tn, ok := second.ByKeyHash(apikey.Hash(cfg.Partner.Keys.Pepper, k), time.Now()); !ok || tn.ID != id {
			t.Fatal("a key valid during the overlap does not resolve on the second registry")
		}
	}
	// A key past its overlap no longer resolves.
	if _, ok := second.ByKeyHash(apikey.Hash(cfg.Partner.Keys.Pepper, created.APIKey), time.Now().Add(2*time.Hour)); ok {
		t.Fatal("rotated key still valid after the overlap")
	}

	for _, secret := range []string{created.APIKey, newKey, created.WebhookSecret, newSecret, cfg.Partner.Keys.Pepper} {
		if strings.Contains(logs.String(), secret) {
			t.Fatal("a key, secret or the pepper appears in the logs")
		}
	}
}

// TestFollowDelay measures how quickly a running registry sees a change made
// through another process's writer.
func TestFollowDelay(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	log := slog.New(slog.DiscardHandler)
	brokers, cl := testenv.Kafka(t, cfg)
	writerSide := startRegistry(t, cfg, brokers, log)
	follower := startRegistry(t, cfg, brokers, log)
	seen := make(chan time.Time, 16)
	follower.OnChange(func(_, n *schemas.Tenant) {
		if n != nil && n.Status == schemas.StatusSuspended {
			seen <- time.Now()
		}
	})
	w := newWriter(cfg, writerSide, cl)
	c, err := w.Create(context.Background(), registry.CreateRequest{Name: "Follow", Tier: "standard", WebhookURL: "https://partner.example/hook"})
	if err != nil {
		t.Fatal(err)
	}
	var delays []time.Duration
	for i := 0; i < 5; i++ {
		status := schemas.StatusSuspended
		start := time.Now()
		if _, err := w.SetStatus(context.Background(), c.Tenant.ID, status); err != nil {
			t.Fatal(err)
		}
		select {
		case at := <-seen:
			delays = append(delays, at.Sub(start))
		case <-time.After(20 * time.Second):
			t.Fatal("follower never saw the change")
		}
		if _, err := w.SetStatus(context.Background(), c.Tenant.ID, schemas.StatusActive); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("change → follower applied: %v (kafka real=%v)", delays, testenv.RealKafka())
}

func TestGarbageRecordIsSkipped(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	var logs testenv.LogBuffer
	log := logs.Logger(t)
	brokers, cl := testenv.Kafka(t, cfg)
	topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTenants)
	ctx := context.Background()
	garbage := []*kgo.Record{
		{Topic: topic, Key: []byte("tn_garbage"), Value: []byte("{not json whsec_secretvalue")},
		{Topic: topic, Key: []byte("tn_mismatch"), Value: []byte(`{"id":"tn_other","name":"x","version":1}`)},
	}
	if err := cl.ProduceSync(ctx, garbage...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	r := startRegistry(t, cfg, brokers, log)
	w := newWriter(cfg, r, cl)
	if _, err := w.Create(ctx, registry.CreateRequest{Name: "After", Tier: "enterprise", WebhookURL: "https://p.example/h"}); err != nil {
		t.Fatalf("registry stopped following after garbage: %v", err)
	}
	if r.Len() != 1 {
		t.Fatalf("want 1 tenant, got %d", r.Len())
	}
	if !strings.Contains(logs.String(), "skipping undecodable tenant record") {
		t.Fatal("garbage record not logged")
	}
	if strings.Contains(logs.String(), "whsec_secretvalue") {
		t.Fatal("garbage record contents were logged")
	}
}

func TestWriterValidation(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	r := startRegistry(t, cfg, brokers, slog.New(slog.DiscardHandler))
	w := newWriter(cfg, r, cl)
	ctx := context.Background()
	if _, err := w.Create(ctx, registry.CreateRequest{Name: "Dup", Tier: "sandbox", WebhookURL: "https://a.example/h"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		req   registry.CreateRequest
		want  error
		field string
	}{
		{"unknown tier", registry.CreateRequest{Name: "A", Tier: "gold", WebhookURL: "https://a.example/h"}, registry.ErrInvalid, "tier"},
		{"malformed url", registry.CreateRequest{Name: "B", Tier: "sandbox", WebhookURL: "not a url"}, registry.ErrInvalid, "webhook_url"},
		{"ftp url", registry.CreateRequest{Name: "B", Tier: "sandbox", WebhookURL: "ftp://a.example/h"}, registry.ErrInvalid, "webhook_url"},
		{"credentials in url", registry.CreateRequest{Name: "B", Tier: "sandbox", WebhookURL: "https://u:p@a.example/h"}, registry.ErrInvalid, "webhook_url"},
		{"duplicate name", registry.CreateRequest{Name: "dup", Tier: "sandbox", WebhookURL: "https://a.example/h"}, registry.ErrConflict, ""},
		{"unknown region", registry.CreateRequest{Name: "C", Tier: "sandbox", WebhookURL: "https://a.example/h", Regions: []string{"mars"}}, registry.ErrInvalid, "regions[0]"},
		{"bad event", registry.CreateRequest{Name: "D", Tier: "sandbox", WebhookURL: "https://a.example/h", Events: []string{"Bad Type"}}, registry.ErrInvalid, "events[0]"},
		{"zero burst", registry.CreateRequest{Name: "E", Tier: "sandbox", WebhookURL: "https://a.example/h", RateLimit: &schemas.RateLimit{RequestsPerMinute: 10}}, registry.ErrInvalid, "rate_limit.burst_size"},
		{"empty name", registry.CreateRequest{Name: "", Tier: "sandbox", WebhookURL: "https://a.example/h"}, registry.ErrInvalid, "name"},
		{"jwt off enterprise", registry.CreateRequest{Name: "F", Tier: "standard", WebhookURL: "https://a.example/h", JWT: &schemas.JWTConfig{Issuer: "x"}}, registry.ErrInvalid, "jwt"},
		{"unusable jwks", registry.CreateRequest{Name: "G", Tier: "enterprise", WebhookURL: "https://a.example/h", JWT: &schemas.JWTConfig{Issuer: "https://idp", JWKS: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`}}, registry.ErrInvalid, "jwt"},
		{"identities off enterprise", registry.CreateRequest{Name: "H", Tier: "standard", WebhookURL: "https://a.example/h", ClientIdentities: []string{"spiffe://a.example/x"}}, registry.ErrInvalid, "client_identities"},
		{"identity with a space", registry.CreateRequest{Name: "I", Tier: "enterprise", WebhookURL: "https://a.example/h", ClientIdentities: []string{"spiffe://a.example/x", "bad name"}}, registry.ErrInvalid, "client_identities[1]"},
		{"identity twice", registry.CreateRequest{Name: "J", Tier: "enterprise", WebhookURL: "https://a.example/h", ClientIdentities: []string{"client.a.example", "client.a.example"}}, registry.ErrInvalid, "client_identities[1]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := w.Create(ctx, c.req)
			if !errors.Is(err, c.want) {
				t.Fatalf("want %v, got %v", c.want, err)
			}
			var fe *registry.FieldError
			if c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
				t.Fatalf("want field %q, got %v", c.field, err)
			}
		})
	}
	if _, err := w.SetStatus(ctx, "tn_missing", schemas.StatusSuspended); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
}

// TestOnChangeCancel: a cancelled watcher sees no later change, the others
// keep theirs, and cancel is idempotent.
func TestOnChangeCancel(t *testing.T) {
	t.Parallel()
	reg, err := registry.New("tenants", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	var a, b int
	cancelA := reg.OnChange(func(_, _ *schemas.Tenant) { a++ })
	cancelB := reg.OnChange(func(_, _ *schemas.Tenant) { b++ })
	put := func(v int64) {
		t.Helper()
		tn := schemas.Tenant{SchemaVersion: schemas.SchemaVersion, ID: "tn_1", Name: "One", Tier: schemas.TierSandbox, Status: schemas.StatusActive, Version: v}
		val, err := json.Marshal(tn)
		if err != nil {
			t.Fatal(err)
		}
		reg.Apply(&kgo.Record{Key: []byte(tn.ID), Value: val})
	}
	put(1)
	cancelA()
	cancelA()
	put(2)
	if a != 1 || b != 2 {
		t.Fatalf("after cancel: a saw %d changes (want 1), b %d (want 2)", a, b)
	}
	if n := reg.Watchers(); n != 1 {
		t.Fatalf("%d watchers left, want 1", n)
	}
	cancelB()
	if n := reg.Watchers(); n != 0 {
		t.Fatalf("%d watchers left, want 0", n)
	}
}
