// Package registrytest runs a tenant registry for tests: following cfg's
// tenants topic on the test brokers, loaded before the test goes on, stopped
// at cleanup. Tests of the registry, the admin API, the xDS control plane and
// the webhooks processor share it.
package registrytest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/seal"
	"github.com/partners-engine/partners-engine/schemas"
)

// Topic is cfg's tenants topic on the broker.
func Topic(cfg *config.Config) string {
	return kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicTenants)
}

// Start runs a registry on cfg's tenants topic, with opts besides its
// keyring, and returns it once it has read the topic to its end.
func Start(t testing.TB, cfg *config.Config, brokers []string, log *slog.Logger, opts ...registry.Option) *registry.Registry {
	t.Helper()
	cl, err := kafka.NewClient(cfg.Kafka, brokers, log, registry.ConsumerOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(Topic(cfg), log, nil, append([]registry.Option{registry.WithSecrets(Keyring(cfg))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx, cl) }()
	t.Cleanup(func() {
		cancel()
		<-done
		cl.Close()
	})
	select {
	case <-reg.Ready():
	case err := <-done:
		t.Fatalf("registry stopped before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("registry not ready after 30s")
	}
	return reg
}

// Keyring is cfg's webhook-secret keyring (cfg is valid: it cannot fail).
func Keyring(cfg *config.Config) *seal.Keyring {
	k, err := cfg.Partner.Keys.Keyring()
	if err != nil {
		panic(err)
	}
	return k
}

// Writer returns a Writer on reg for cfg's tenants topic, its transactional
// clients built from base's options (and closed with base); previous keys
// and secrets stay valid for keyOverlap and an hour.
func Writer(cfg *config.Config, reg *registry.Registry, base *kgo.Client, keyOverlap time.Duration) *registry.Writer {
	return registry.NewWriter(reg, base, registry.WriterOptions{
		Topic: Topic(cfg), Pepper: cfg.Partner.Keys.Pepper, Regions: cfg.RegionNames(), Features: cfg.Partner.Gateway.FeatureNames(),
		KeyOverlap: keyOverlap, SecretOverlap: time.Hour, Secrets: Keyring(cfg),
	})
}
