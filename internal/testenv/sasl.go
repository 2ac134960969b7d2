package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASLListener describes the SASL listeners of the single test broker
// (deploy/local/kafka.sh): SCRAM-SHA-512 over plaintext and over TLS, both on
// the same broker and data as PARTNERS_TEST_KAFKA's PLAINTEXT listener.
type SASLListener struct {
	// Addr is the SASL_PLAINTEXT listener.
	Addr string
	// TLSAddr is the SASL_SSL listener ("" when PARTNERS_TEST_KAFKA_SASL_SSL is unset).
	TLSAddr string
	// Mechanism is the SASL mechanism, SCRAM-SHA-512.
	Mechanism string
	// User and Password are the SCRAM credentials the broker was set up with.
	User, Password string
	// CAFile is the PEM CA that signed the SASL_SSL certificate (CN and
	// SAN 127.0.0.1, SAN localhost); "" without TLSAddr.
	CAFile string
}

// KafkaSASL returns the SASL listeners at PARTNERS_TEST_KAFKA_SASL (and
// PARTNERS_TEST_KAFKA_SASL_SSL), after checking that the credentials work on
// them. It skips the test when PARTNERS_TEST_KAFKA_SASL is unset and fails it
// when the listener does not answer or refuses the credentials.
func KafkaSASL(t testing.TB) SASLListener {
	t.Helper()
	addrs := stackAddrs(t, "PARTNERS_TEST_KAFKA_SASL", "SASL listener")
	s := SASLListener{
		Addr:      addrs[0],
		TLSAddr:   strings.TrimSpace(os.Getenv("PARTNERS_TEST_KAFKA_SASL_SSL")),
		Mechanism: "SCRAM-SHA-512",
		User:      envOr("PARTNERS_TEST_KAFKA_SASL_USER", "partners"),
		Password:  envOr("PARTNERS_TEST_KAFKA_SASL_PASSWORD", "partners-test-secret"),
	}
	if s.TLSAddr != "" {
		s.CAFile = strings.TrimSpace(os.Getenv("PARTNERS_TEST_KAFKA_CA"))
		if s.CAFile == "" {
			_, port, err := net.SplitHostPort(s.TLSAddr)
			if err != nil {
				t.Fatalf("PARTNERS_TEST_KAFKA_SASL_SSL=%q: %v", s.TLSAddr, err)
			}
			s.CAFile = strings.TrimSpace(runScript(t, time.Minute, []string{"KAFKA_SASL_SSL_PORT=" + port}, "kafka.sh", "ca"))
		}
	}
	s.check(t, s.Addr, s.Opts())
	if s.TLSAddr != "" {
		s.check(t, s.TLSAddr, s.TLSOpts(t))
	}
	return s
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Auth is the franz-go SCRAM-SHA-512 mechanism with the test credentials.
func (s SASLListener) Auth() kgo.Opt {
	return kgo.SASL(scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism())
}

// Opts are the franz-go options for the SASL_PLAINTEXT listener.
func (s SASLListener) Opts() []kgo.Opt {
	return []kgo.Opt{kgo.SeedBrokers(s.Addr), s.Auth()}
}

// TLSConfig trusts only the test CA and checks the broker's name (127.0.0.1).
func (s SASLListener) TLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	if s.CAFile == "" {
		t.Fatal("no SASL_SSL listener: PARTNERS_TEST_KAFKA_SASL_SSL is unset")
	}
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatalf("CA of the SASL_SSL listener: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", s.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// TLSOpts are the franz-go options for the SASL_SSL listener.
func (s SASLListener) TLSOpts(t testing.TB) []kgo.Opt {
	t.Helper()
	return []kgo.Opt{kgo.SeedBrokers(s.TLSAddr), s.Auth(), kgo.DialTLSConfig(s.TLSConfig(t))}
}

// check fails the test unless a client with opts gets the broker's metadata.
func (s SASLListener) check(t testing.TB, addr string, opts []kgo.Opt) {
	t.Helper()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).BrokerMetadata(ctx); err != nil {
		t.Fatalf("kafka SASL listener %s (user %s): %v; deploy/local/kafka.sh starts it (a broker started by an older kafka.sh has none until 'kafka.sh restart')", addr, s.User, err)
	}
}
