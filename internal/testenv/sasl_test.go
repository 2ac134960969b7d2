package testenv

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TestKafkaSASL: the test broker takes SCRAM-SHA-512 clients on its
// SASL_PLAINTEXT and SASL_SSL listeners, refuses a wrong password and a
// client that does not trust the test CA, and is the same broker as the
// PLAINTEXT one (a record produced over SASL is read over TLS and plaintext).
func TestKafkaSASL(t *testing.T) {
	s := KafkaSASL(t)
	if s.TLSAddr == "" {
		t.Fatal("PARTNERS_TEST_KAFKA_SASL_SSL unset: make test tests both SASL listeners")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	newClient := func(opts ...kgo.Opt) *kgo.Client {
		t.Helper()
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}

	topic := "t" + RandomID() + ".sasl"
	sasl := newClient(append(s.Opts(), kgo.DefaultProduceTopic(topic))...)
	adm := kadm.NewClient(sasl)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatalf("create topic over SASL_PLAINTEXT: %v", err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), topic) })
	if err := sasl.ProduceSync(ctx, &kgo.Record{Value: []byte("over-sasl")}).FirstErr(); err != nil {
		t.Fatalf("produce over SASL_PLAINTEXT: %v", err)
	}

	from := map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}
	readOne := func(name string, opts []kgo.Opt) {
		t.Helper()
		cl := newClient(append(opts, kgo.ConsumePartitions(from))...)
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			t.Fatalf("consume over %s: %v", name, err)
		}
		if rs := fs.Records(); len(rs) == 0 || string(rs[0].Value) != "over-sasl" {
			t.Fatalf("consume over %s: got %d records", name, len(rs))
		}
	}
	readOne("SASL_SSL", s.TLSOpts(t))
	readOne("PLAINTEXT", []kgo.Opt{kgo.SeedBrokers(Brokers(t)...)})

	refused := func(name string, want string, opts ...kgo.Opt) {
		t.Helper()
		cl := newClient(append(opts, kgo.RequestRetries(0), kgo.RetryTimeout(5*time.Second))...)
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := kadm.NewClient(cl).BrokerMetadata(ctx)
		if err == nil {
			t.Fatalf("%s: broker accepted it", name)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: error %q does not mention %q", name, err, want)
		}
	}
	bad := kgo.SASL(scram.Auth{User: s.User, Pass: s.Password + "x"}.AsSha512Mechanism())
	refused("wrong password over SASL_PLAINTEXT", "SASL_AUTHENTICATION_FAILED", kgo.SeedBrokers(s.Addr), bad)
	refused("wrong password over SASL_SSL", "SASL_AUTHENTICATION_FAILED", kgo.SeedBrokers(s.TLSAddr), bad, kgo.DialTLSConfig(s.TLSConfig(t)))
	refused("SASL_SSL without the test CA", "certificate", kgo.SeedBrokers(s.TLSAddr), s.Auth(),
		kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
}
