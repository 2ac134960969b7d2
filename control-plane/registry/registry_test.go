package registry_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/registry/registrytest"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/seal"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores()...)
}

func startRegistry(t testing.TB, cfg *config.Config, brokers []string, log *slog.Logger) *registry.Registry {
	return registrytest.Start(t, cfg, brokers, log)
}

func newWriter(cfg *config.Config, reg *registry.Registry, prod *kgo.Client) *registry.Writer {
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

// TestGarbageRecordIsSkipped: undecodable tenant records are skipped,
// logged without their content and dead-lettered; the registry goes on.
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
		// a huge key: named in the reason, cut to a bounded length
		{Topic: topic, Key: []byte(strings.Repeat("k", 300<<10)), Value: []byte(`{"id":"tn_other","name":"x","version":1}`)},
	}
	acks := cl.ProduceSync(ctx, garbage...)
	if err := acks.FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Two processes read the same garbage: both dead-letter it, under the
	// same key with the same value (the DLQ is compacted).
	dlqTopic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTenantsDLQ)
	r := registrytest.Start(t, cfg, brokers, log, registry.WithDeadLetters(dlqTopic, cl))
	registrytest.Start(t, cfg, brokers, slog.New(slog.DiscardHandler), registry.WithDeadLetters(dlqTopic, cl))
	w := newWriter(cfg, r, cl)
	if _, err := w.Create(ctx, registry.CreateRequest{Name: "After", Tier: "enterprise", WebhookURL: "https://p.example/h"}); err != nil {
		t.Fatalf("registry stopped following after garbage: %v", err)
	}
	rd, err := kafka.NewClient(cfg.Kafka, brokers, slog.New(slog.DiscardHandler), kgo.ConsumeTopics(dlqTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	byKey := map[string][]string{}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for n := 0; n < 2*len(garbage) && pctx.Err() == nil; {
		rd.PollFetches(pctx).EachRecord(func(rec *kgo.Record) {
			byKey[string(rec.Key)] = append(byKey[string(rec.Key)], string(rec.Value))
			n++
		})
	}
	for _, g := range acks {
		key := fmt.Sprintf("%d/%d", g.Record.Partition, g.Record.Offset)
		vs := byKey[key]
		if len(vs) != 2 || vs[0] != vs[1] {
			t.Fatalf("dead letters of the garbage at %s: %q; want the same one from each registry (all: %v)", key, vs, byKey)
		}
		var dl schemas.DeadLetter
		if err := json.Unmarshal([]byte(vs[0]), &dl); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(g.Record.Value)
		if dl.ReasonCode != "malformed_record" || dl.Reason == "" || dl.SourceTopic != topic ||
			dl.SourcePartition == nil || *dl.SourcePartition != g.Record.Partition || dl.SourceOffset == nil || *dl.SourceOffset != g.Record.Offset ||
			dl.PayloadBytes != len(g.Record.Value) || dl.PayloadSHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("dead letter at %s: %s", key, vs[0])
		}
		if len(vs[0]) > 2<<10 {
			t.Fatalf("dead letter at %s is %d bytes: a tenant dead letter names the record, it does not copy it", key, len(vs[0]))
		}
		if err := schemas.Validate(schemas.KindDeadLetter, []byte(vs[0])); err != nil {
			t.Fatalf("dead letter does not match its JSON Schema: %v", err)
		}
	}
	if len(byKey) != len(garbage) {
		t.Fatalf("dead letters under %d keys, want %d: %v", len(byKey), len(garbage), byKey)
	}
	for _, vs := range byKey {
		if strings.Contains(vs[0], "whsec_secretvalue") {
			t.Fatal("a tenant dead letter copies the record's content")
		}
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
		{"unusable jwks", registry.CreateRequest{Name: "G", Tier: "enterprise", WebhookURL: "https://a.example/h", JWT: &schemas.JWTConfig{Issuer: "https://idp", JWKS: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`}}, registry.ErrInvalid, "jwt.jwks"},
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

// TestWaitVersionWaitsForWatchers: a read-your-writes waiter (an admin write
// returning) is released only after every change function ran, so the
// plugin's cache eviction is done when the write returns and the next Check
// answers with the change.
func TestWaitVersionWaitsForWatchers(t *testing.T) {
	t.Parallel()
	reg, err := registry.New("tenants", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var evicted atomic.Bool
	reg.OnChange(func(_, _ *schemas.Tenant) {
		close(entered)
		<-release
		evicted.Store(true)
	})
	tn := schemas.Tenant{SchemaVersion: schemas.SchemaVersion, ID: "tn_1", Name: "One", Tier: schemas.TierSandbox, Status: schemas.StatusActive, Version: 1}
	val, err := json.Marshal(tn)
	if err != nil {
		t.Fatal(err)
	}
	go reg.Apply(&kgo.Record{Key: []byte(tn.ID), Value: val})
	<-entered
	waited := make(chan error, 1)
	go func() { waited <- reg.WaitVersion(context.Background(), tn.ID, 1) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitVersion returned (%v) while a change function was still running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if !evicted.Load() {
		t.Fatal("WaitVersion returned before the change function finished")
	}
}

// TestConcurrentWritersNeverLoseAnUpdate races two writers, each with its own
// registry and Kafka clients as two processes have, on one tenant: every
// round one suspends or activates while the other patches the rate limit, and
// a third disables an endpoint now and then (the webhooks processor on a
// 410). Every change that returned success is in the state afterwards, the
// loser of a round gets a ConflictError naming the current version, the
// version grows by exactly one per success, and a registry rebuilt from the
// topic agrees.
func TestConcurrentWritersNeverLoseAnUpdate(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	raceWriters(t, cfg, brokers, cl, 100)
}

// TestConcurrentWritersOnCluster is the race on the three-broker cluster
// (replication 3, min ISR 2): the transaction coordinator and the tenants
// partitions' leaders are spread over brokers.
func TestConcurrentWritersOnCluster(t *testing.T) {
	t.Parallel()
	kc := testenv.KafkaCluster(t)
	// No other package's fault test takes a node down meanwhile: this test
	// is about concurrent writers, and a leader failover longer than the
	// writer's apply timeout would fail a write with 503, not a conflict.
	kc.Exclusive()
	cfg := testenv.Config(t)
	cfg.Kafka.Brokers = kc.Brokers
	cfg.Kafka.Replication, cfg.Kafka.MinInsyncReplicas = 3, 2
	cl, err := kafka.NewClient(cfg.Kafka, kc.Brokers, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		t.Fatal(err)
	}
	raceWriters(t, cfg, kc.Brokers, cl, 20)
}

func raceWriters(t *testing.T, cfg *config.Config, brokers []string, cl *kgo.Client, rounds int) {
	log := slog.New(slog.DiscardHandler)
	regA, regB := startRegistry(t, cfg, brokers, log), startRegistry(t, cfg, brokers, log)
	clB, err := kafka.NewClient(cfg.Kafka, brokers, log)
	if err != nil {
		t.Fatal(err)
	}
	defer clB.Close()
	wA, wB := newWriter(cfg, regA, cl), newWriter(cfg, regB, clB)
	ctx := context.Background()
	c, err := wA.Create(ctx, registry.CreateRequest{Name: "Race", Tier: "standard", WebhookURL: "https://partner.example/hook"})
	if err != nil {
		t.Fatal(err)
	}
	id := c.Tenant.ID
	var epIDs []string
	for i := 0; i < 3; i++ {
		tn, err := wA.Update(ctx, id, registry.Patch{Endpoints: []registry.EndpointPatch{{URL: fmt.Sprintf("https://partner.example/h%d", i)}}})
		if err != nil {
			t.Fatal(err)
		}
		epIDs = append(epIDs, tn.Endpoints[len(tn.Endpoints)-1].ID)
	}
	start, _ := regA.Get(id)
	version := start.Version
	// Both processes start the rounds from this version, so a loser's
	// conflict must name a newer one (a registry still behind the setup
	// writes would lose naming this one).
	for _, r := range []*registry.Registry{regA, regB} {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := r.WaitVersion(wctx, id, version); err != nil {
			t.Fatal(err)
		}
		cancel()
	}

	wins, conflicts := map[string]int{}, 0
	for i := 0; i < rounds; i++ {
		status := schemas.StatusSuspended
		if i%2 == 1 {
			status = schemas.StatusActive
		}
		rpm := 100 + i
		disable := i%25 == 0 && i/25 < len(epIDs)
		var errA, errB, errC error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, errA = wA.SetStatus(ctx, id, status) }()
		go func() {
			defer wg.Done()
			_, errB = wB.Update(ctx, id, registry.Patch{RateLimit: &schemas.RateLimit{RequestsPerMinute: rpm, BurstSize: 10}})
		}()
		if disable {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errC = wB.DisableEndpoint(ctx, id, epIDs[i/25], "410 Gone from the endpoint")
			}()
		}
		wg.Wait()
		ok := 0
		for name, err := range map[string]error{"suspend/activate": errA, "patch": errB, "disable": errC} {
			switch {
			case err == nil:
				ok++
				if name != "disable" || disable {
					wins[name]++
				}
			case errors.Is(err, registry.ErrConflict):
				conflicts++
				var ce *registry.ConflictError
				if !errors.As(err, &ce) || ce.Current <= version {
					t.Fatalf("round %d: %s conflict does not name the current version: %v", i, name, err)
				}
			default:
				t.Fatalf("round %d: %s: %v", i, name, err)
			}
		}
		if disable {
			if errC != nil {
				t.Fatalf("round %d: the endpoint disable must retry until it applies, got %v", i, errC)
			}
		} else {
			ok-- // errC was never run
		}
		if ok == 0 {
			t.Fatalf("round %d: every writer lost", i)
		}
		version += int64(ok)
		for _, r := range []*registry.Registry{regA, regB} {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := r.WaitVersion(wctx, id, version); err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			cancel()
		}
		got, _ := regA.Get(id)
		other, _ := regB.Get(id)
		if got.Version != version || other.Version != version {
			t.Fatalf("round %d: versions %d / %d, want %d (one per success)", i, got.Version, other.Version, version)
		}
		if errA == nil && got.Status != status {
			t.Fatalf("round %d: the %s answered success but the tenant is %s: a lost update", i, status, got.Status)
		}
		if errB == nil && (got.RateLimit == nil || got.RateLimit.RequestsPerMinute != rpm) {
			t.Fatalf("round %d: the patch answered success but the rate limit is %v: a lost update", i, got.RateLimit)
		}
		if disable && !got.Endpoints[i/25+1].Disabled {
			t.Fatalf("round %d: the endpoint disable answered success but the endpoint is enabled", i)
		}
	}
	t.Logf("%d rounds of concurrent writers on %v: wins %v, %d conflicts, every success applied", rounds, brokers, wins, conflicts)

	final, _ := regA.Get(id)
	rebuilt := startRegistry(t, cfg, brokers, log)
	got, ok := rebuilt.Get(id)
	if !ok || got.Version != final.Version || got.Status != final.Status || *got.RateLimit != *final.RateLimit {
		t.Fatalf("a rebuilt registry disagrees: %+v vs %+v", got, final)
	}
	for i, e := range got.Endpoints {
		if e.Disabled != final.Endpoints[i].Disabled {
			t.Fatalf("a rebuilt registry disagrees on endpoint %d", i)
		}
	}
}

// TestCrashedWriterIsFenced: a writer that produced a change and died before
// committing it leaves an open transaction. No registry ever applies that
// change, and the next write to the partition (from another process) aborts
// it at once and applies.
func TestCrashedWriterIsFenced(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	log := slog.New(slog.DiscardHandler)
	brokers, cl := testenv.Kafka(t, cfg)
	reg := startRegistry(t, cfg, brokers, log)
	w := newWriter(cfg, reg, cl)
	ctx := context.Background()
	c, err := w.Create(ctx, registry.CreateRequest{Name: "Crash", Tier: "standard", WebhookURL: "https://partner.example/hook"})
	if err != nil {
		t.Fatal(err)
	}
	id := c.Tenant.ID
	p, ok := reg.Partition(id)
	if !ok {
		t.Fatal("no partition for the tenant")
	}
	// The dead writer: its change (suspended, version 2) is produced in a
	// transaction that never ends.
	topic := registrytest.Topic(cfg)
	zombie, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(registry.TransactionalID(topic, p)),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := zombie.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	dead := *c.Tenant
	dead.Status, dead.Version, dead.Endpoints = schemas.StatusSuspended, 2, nil
	val, _ := json.Marshal(dead)
	if err := zombie.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Key: []byte(id), Value: val}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	zombie.Close() // dies without ending its transaction

	start := time.Now()
	got, err := w.Update(ctx, id, registry.Patch{Features: map[string]bool{"reports": true}})
	if err != nil {
		t.Fatalf("write after a crashed writer: %v", err)
	}
	t.Logf("write after the crashed writer's open transaction took %v (its timeout is 1m)", time.Since(start).Round(time.Millisecond))
	if got.Version != 2 || got.Status != schemas.StatusActive || !got.Features["reports"] {
		t.Fatalf("after the crash: version %d status %s features %v", got.Version, got.Status, got.Features)
	}
	for _, r := range []*registry.Registry{reg, startRegistry(t, cfg, brokers, log)} {
		tn, _ := r.Get(id)
		if tn.Status != schemas.StatusActive || tn.Version != 2 || len(tn.Endpoints) != 1 {
			t.Fatalf("the crashed writer's change was applied: status %s version %d", tn.Status, tn.Version)
		}
	}
}

// TestWriterCaps: names, counts, sizes and JWT configurations are checked
// when written, each refusal naming its field; nothing is written.
func TestWriterCaps(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	r := startRegistry(t, cfg, brokers, slog.New(slog.DiscardHandler))
	w := newWriter(cfg, r, cl)
	ctx := context.Background()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	goodJWKS := jwks.Document(&key.PublicKey, "k1")
	ent, err := w.Create(ctx, registry.CreateRequest{Name: "Ent", Tier: "enterprise", WebhookURL: "https://a.example/h",
		JWT: &schemas.JWTConfig{Issuer: "https://idp.example", JWKS: goodJWKS}})
	if err != nil {
		t.Fatal(err)
	}
	many := func(n int, f func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	flags := func(n int) map[string]bool {
		m := map[string]bool{}
		for i := 0; i < n; i++ {
			m[fmt.Sprintf("f%d", i)] = true
		}
		return m
	}
	base := func(name string) registry.CreateRequest {
		return registry.CreateRequest{Name: name, Tier: "enterprise", WebhookURL: "https://a.example/h"}
	}
	with := func(name string, f func(*registry.CreateRequest)) registry.CreateRequest {
		c := base(name)
		f(&c)
		return c
	}
	creates := []struct {
		name  string
		req   registry.CreateRequest
		field string
	}{
		{"NUL in name", base("Acme\x00Corp"), "name"},
		{"newline in name", base("Acme\nCorp"), "name"},
		{"escape sequence in name", base("Acme\x1b[31m"), "name"},
		{"bidi override in name", base("Acme\u202eproC"), "name"},
		{"bidi isolate in name", base("Acme\u2066x"), "name"},
		{"zero width joiner in name", base("Ac\u200dme"), "name"},
		{"not UTF-8", base("Acme\xff"), "name"},
		{"101 characters", base(strings.Repeat("é", 101)), "name"},
		{"10,000 event types", with("E", func(c *registry.CreateRequest) {
			c.Events = many(10_000, func(i int) string { return fmt.Sprintf("order.t%d", i) })
		}), "events"},
		{"long event type", with("E", func(c *registry.CreateRequest) { c.Events = []string{"order." + strings.Repeat("x", 200)} }), "events[0]"},
		{"20,000 features", with("F", func(c *registry.CreateRequest) { c.Features = flags(20_000) }), "features"},
		{"empty issuer", with("J", func(c *registry.CreateRequest) { c.JWT = &schemas.JWTConfig{Issuer: " ", JWKS: goodJWKS} }), "jwt.issuer"},
		{"JWKS not JSON", with("J", func(c *registry.CreateRequest) {
			c.JWT = &schemas.JWTConfig{Issuer: "https://idp.example", JWKS: "not json"}
		}), "jwt.jwks"},
		{"JWKS without RSA key", with("J", func(c *registry.CreateRequest) {
			c.JWT = &schemas.JWTConfig{Issuer: "https://idp.example", JWKS: `{"keys":[]}`}
		}), "jwt.jwks"},
		{"empty audience", with("J", func(c *registry.CreateRequest) {
			c.JWT = &schemas.JWTConfig{Issuer: "https://idp.example", Audiences: []string{""}, JWKS: goodJWKS}
		}), "jwt.audiences[0]"},
		{"duplicate region", with("R", func(c *registry.CreateRequest) { c.Regions = []string{"us-east", "us-east"} }), "regions[1]"},
	}
	for _, c := range creates {
		t.Run(c.name, func(t *testing.T) {
			_, err := w.Create(ctx, c.req)
			var fe *registry.FieldError
			if !errors.As(err, &fe) || fe.Field != c.field {
				t.Fatalf("want a field error on %q, got %v", c.field, err)
			}
			if strings.ContainsAny(fe.Error(), "\x00\x1b\u202e\u2066\n") {
				t.Fatalf("the error repeats the unprintable input: %q", fe.Error())
			}
		})
	}
	// Printable names in any script are fine.
	for _, name := range []string{"Müller & Söhne GmbH", "株式会社パートナー", "شركة الشريك", "O'Brien (EU)"} {
		if _, err := w.Create(ctx, base(name)); err != nil {
			t.Fatalf("%q: %v", name, err)
		}
	}

	id := ent.Tenant.ID
	before, _ := r.Get(id)
	eps := make([]registry.EndpointPatch, 0, 21)
	for i := 0; i < 21; i++ {
		eps = append(eps, registry.EndpointPatch{URL: fmt.Sprintf("https://a.example/h%d", i)})
	}
	bigMapping := &schemas.FieldMapping{Version: 1, Fields: map[string]string{}}
	for i := 0; i < 256; i++ {
		bigMapping.Fields[fmt.Sprintf("out.%s%d", strings.Repeat("n", 200), i)] = "data." + strings.Repeat("p", 240)
	}
	patches := []struct {
		name  string
		p     registry.Patch
		field string
		want  error
	}{
		{"21 endpoints", registry.Patch{Endpoints: eps}, "endpoints", registry.ErrInvalid},
		{"long filter", registry.Patch{Endpoints: []registry.EndpointPatch{{URL: "https://a.example/f", Filter: strings.Repeat("x", 5000)}}}, "endpoints[0].filter", registry.ErrInvalid},
		{"unknown payload version", registry.Patch{Endpoints: []registry.EndpointPatch{{URL: "https://a.example/f", PayloadVersion: "9"}}}, "endpoints[0].payload_version", registry.ErrInvalid},
		{"JWKS not JSON", registry.Patch{JWT: &schemas.JWTConfig{Issuer: "https://idp.example", JWKS: "{"}}, "jwt.jwks", registry.ErrInvalid},
		{"record over the size limit", registry.Patch{Endpoints: []registry.EndpointPatch{
			{URL: "https://a.example/m1", Mapping: bigMapping}, {URL: "https://a.example/m2", Mapping: bigMapping}, {URL: "https://a.example/m3", Mapping: bigMapping},
		}}, "", registry.ErrTooLarge},
	}
	for _, c := range patches {
		t.Run(c.name, func(t *testing.T) {
			_, err := w.Update(ctx, id, c.p)
			if !errors.Is(err, c.want) {
				t.Fatalf("want %v, got %v", c.want, err)
			}
			var fe *registry.FieldError
			if c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
				t.Fatalf("want a field error on %q, got %v", c.field, err)
			}
		})
	}
	// 20 endpoints is the most: 19 more are fine, one after that is not.
	if _, err := w.Update(ctx, id, registry.Patch{Endpoints: eps[:19]}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Update(ctx, id, registry.Patch{Endpoints: eps[19:20]}); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("a 21st endpoint: %v", err)
	}
	after, _ := r.Get(id)
	if after.Version != before.Version+1 {
		t.Fatalf("refused changes were written: version %d → %d", before.Version, after.Version)
	}
	// A patch that changes nothing writes nothing.
	if got, err := w.Update(ctx, id, registry.Patch{}); err != nil || got.Version != after.Version {
		t.Fatalf("empty patch: %v, version %d", err, got.Version)
	}
}

// TestSecretsSealedAtRest: webhook secrets are never in the tenants topic in
// the clear; a registry with the key opens them; after a key rotation old
// records stay readable, ResealSecrets moves every tenant (a legacy
// plaintext record too) to the new key, and then the old key can go. A
// registry without the key still serves the tenant, without its secret.
func TestSecretsSealedAtRest(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	var logs testenv.LogBuffer
	log := logs.Logger(t)
	brokers, cl := testenv.Kafka(t, cfg)
	topic := registrytest.Topic(cfg)
	key := func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	oldKey, newKey := key(), key()
	keyring := func(active string, keys ...config.SecretKey) *seal.Keyring {
		k := cfg.Partner.Keys
		k.SecretKeys, k.ActiveSecretKey = keys, active
		kr, err := k.Keyring()
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
	start := func(kr *seal.Keyring) *registry.Registry {
		rcl, err := kafka.NewClient(cfg.Kafka, brokers, log, registry.ConsumerOpts()...)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := registry.New(topic, log, nil, registry.WithSecrets(kr))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- reg.Run(ctx, rcl) }()
		t.Cleanup(func() { cancel(); <-done; rcl.Close() })
		<-reg.Ready()
		return reg
	}
	writer := func(reg *registry.Registry, kr *seal.Keyring) *registry.Writer {
		return registry.NewWriter(reg, cl, registry.WriterOptions{Topic: topic, Pepper: cfg.Partner.Keys.Pepper,
			Regions: cfg.RegionNames(), SecretOverlap: time.Hour, Secrets: kr})
	}

	krOld := keyring("old", config.SecretKey{ID: "old", Key: oldKey})
	regOld := start(krOld)
	wOld := writer(regOld, krOld)
	c, err := wOld.Create(context.Background(), registry.CreateRequest{Name: "Sealed", Tier: "standard", WebhookURL: "https://partner.example/hook"})
	if err != nil {
		t.Fatal(err)
	}
	secret := c.WebhookSecret
	// A tenant written before sealing: its secret in the clear.
	legacy := schemas.Tenant{SchemaVersion: "1", ID: "tn_00000000000000aa", Name: "Legacy", Tier: "standard", Status: "active",
		Regions: []string{"us-east"}, Endpoints: []schemas.Endpoint{{ID: "ep_1", URL: "https://legacy.example/h",
			Secrets: []schemas.WebhookSecret{{ID: "sec_1", Secret: "whsec_bGVnYWN5LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm", CreatedAt: time.Now().UTC()}}}},
		CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(), Version: 1}
	lv, _ := json.Marshal(legacy)
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(legacy.ID), Value: lv}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := regOld.WaitVersion(context.Background(), legacy.ID, 1); err != nil {
		t.Fatal(err)
	}
	got, _ := regOld.Get(c.Tenant.ID)
	if got.Endpoints[0].Secrets[0].Secret != secret {
		t.Fatal("the registry does not open the sealed secret")
	}
	check := func(id, wantKey string) {
		t.Helper()
		rec := readLatest(t, brokers, topic, id)
		if strings.Contains(string(rec), "whsec_") || strings.Contains(string(rec), secret) {
			t.Fatalf("the tenants topic holds a webhook secret in the clear: %s", rec)
		}
		if !strings.Contains(string(rec), `"sealed":"v1:`+wantKey+`:`) {
			t.Fatalf("record not sealed with key %s: %s", wantKey, rec)
		}
		if err := schemas.Validate(schemas.KindTenant, rec); err != nil {
			t.Fatalf("the written record violates tenant.v1: %v", err)
		}
	}
	check(c.Tenant.ID, "old")

	// Rotation: the new key is active, the old one still opens.
	krBoth := keyring("new", config.SecretKey{ID: "new", Key: newKey}, config.SecretKey{ID: "old", Key: oldKey})
	regBoth := start(krBoth)
	if tn, _ := regBoth.Get(c.Tenant.ID); tn.Endpoints[0].Secrets[0].Secret != secret {
		t.Fatal("an old record is unreadable after the rotation")
	}
	if stale := regBoth.StaleSecrets("new"); len(stale) != 2 {
		t.Fatalf("stale tenants %v, want both", stale)
	}
	res, err := writer(regBoth, krBoth).ResealSecrets(context.Background())
	if err != nil || res.Resealed != 2 || len(res.Unreadable) != 0 || res.ActiveKey != "new" {
		t.Fatalf("reseal: %+v %v", res, err)
	}
	check(c.Tenant.ID, "new")
	check(legacy.ID, "new")
	if stale := regBoth.StaleSecrets("new"); len(stale) != 0 {
		t.Fatalf("still stale after the reseal: %v", stale)
	}

	// The old key is gone: everything still opens with the new one.
	regNew := start(keyring("new", config.SecretKey{ID: "new", Key: newKey}))
	for id, want := range map[string]string{c.Tenant.ID: secret, legacy.ID: legacy.Endpoints[0].Secrets[0].Secret} {
		tn, ok := regNew.Get(id)
		if !ok || len(tn.Endpoints[0].ActiveSecrets(time.Now())) != 1 || tn.Endpoints[0].Secrets[0].Secret != want {
			t.Fatalf("tenant %s unreadable with the new key only", id)
		}
	}
	// Without the key the tenant stays (its API keys work), its secret does not sign.
	regNone := start(keyring("other", config.SecretKey{ID: "other", Key: key()}))
	tn, ok := regNone.Get(c.Tenant.ID)
	if !ok || tn.Endpoints[0].Secrets[0].Secret != "" || len(tn.Endpoints[0].ActiveSecrets(time.Now())) != 0 {
		t.Fatal("without the key: the tenant must stay, with no usable secret")
	}
	if _, ok := regNone.ByKeyHash(apikey.Hash(cfg.Partner.Keys.Pepper, c.APIKey), time.Now()); !ok {
		t.Fatal("without the webhook key the tenant's API key stopped working")
	}
	for _, s := range []string{secret, oldKey, newKey, legacy.Endpoints[0].Secrets[0].Secret} {
		if strings.Contains(logs.String(), s) {
			t.Fatal("a secret or key appears in the logs")
		}
	}
}

// readLatest returns the latest committed value of key on topic.
func readLatest(t *testing.T, brokers []string, topic, key string) []byte {
	t.Helper()
	rc, err := kgo.NewClient(append(registry.ConsumerOpts(), kgo.SeedBrokers(brokers...))...)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(rc).ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	assign := map[int32]kgo.Offset{}
	pending := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		assign[o.Partition] = kgo.NewOffset().AtStart()
		if o.Offset > 0 {
			pending[o.Partition] = o.Offset
		}
	})
	rc.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign})
	var last []byte
	for len(pending) > 0 {
		f := rc.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s timed out", topic)
		}
		f.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() && string(r.Key) == key {
				last = r.Value
			}
			if end, ok := pending[r.Partition]; ok && r.Offset+1 >= end {
				delete(pending, r.Partition)
			}
		})
	}
	return last
}
