package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/runner"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

// startWith runs mode in-process with cfg and returns it once ready; it
// stops at cleanup and must stop cleanly.
func startWith(t *testing.T, mode runner.Mode, cfg *config.Config) *runner.Runner {
	t.Helper()
	var logs testenv.LogBuffer
	r, err := runner.New(runner.Options{Mode: mode, Config: cfg, Log: logs.Logger(t),
		TracerProvider: noop.NewTracerProvider(), Metrics: prometheus.NewRegistry(), ShutdownTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s did not stop cleanly: %v", mode, err)
		}
		for _, s := range []string{cfg.Admin.Token, cfg.Partner.Keys.Pepper, cfg.Kafka.SASL.Password} {
			if s != "" && strings.Contains(logs.String(), s) {
				t.Error("a secret reached the logs")
			}
		}
	})
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("%s failed to start: %v\n%s", mode, err, logs.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("%s not ready after 90s", mode)
	}
	return r
}

func call(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestControlPlanesOverSASL runs two control planes on the test broker's
// SCRAM-SHA-512 listeners, one over SASL_SSL (the test CA, the broker's
// name checked) and one over SASL_PLAINTEXT: topic bootstrap, the
// registries, the tenant writers' transactions and the lag monitor all go
// through kafka.tls and kafka.sasl. A tenant created on one is changed on
// the other and both agree.
func TestControlPlanesOverSASL(t *testing.T) {
	t.Parallel()
	sasl := testenv.KafkaSASL(t)
	if sasl.TLSAddr == "" {
		t.Skip("no SASL_SSL listener (PARTNERS_TEST_KAFKA_SASL_SSL unset)")
	}
	cfgTLS := testenv.Config(t)
	cfgTLS.Kafka.Brokers = []string{sasl.TLSAddr}
	cfgTLS.Kafka.TLS = config.KafkaTLS{Enabled: true, CAFile: sasl.CAFile}
	cfgTLS.Kafka.SASL = config.KafkaSASL{Mechanism: config.SASLScramSHA512, Username: sasl.User, Password: sasl.Password}
	if err := cfgTLS.Validate(); err != nil {
		t.Fatal(err)
	}
	cfgPlain := *cfgTLS
	cfgPlain.Kafka.Brokers = []string{sasl.Addr}
	cfgPlain.Kafka.TLS = config.KafkaTLS{}
	cfgPlain.Listeners.Admin = "127.0.0.1:0"

	// Wrong credentials are refused: the clients really authenticate.
	bad := *cfgTLS
	bad.Kafka.SASL.Password = "not-the-password"
	if r, err := runner.New(runner.Options{Mode: runner.ControlPlane, Config: &bad, TracerProvider: noop.NewTracerProvider(),
		Metrics: prometheus.NewRegistry(), ShutdownTimeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		err := r.Run(ctx)
		cancel()
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "sasl") && !strings.Contains(strings.ToLower(err.Error()), "authentication") {
			t.Fatalf("a control plane with a wrong SASL password: %v", err)
		}
	}

	a := startWith(t, runner.ControlPlane, cfgTLS)
	b := startWith(t, runner.ControlPlane, &cfgPlain)
	tok := cfgTLS.Admin.Token
	urlA, urlB := "http://"+a.Addr(runner.ListenAdmin)+"/api/v1/tenants", "http://"+b.Addr(runner.ListenAdmin)+"/api/v1/tenants"
	code, created := call(t, "POST", urlA, tok, map[string]any{"name": "Secure", "tier": "standard", "webhook_url": "https://partner.example/hook"})
	if code != http.StatusCreated {
		t.Fatalf("create over SASL_SSL: %d %v", code, created)
	}
	id := created["id"].(string)
	var got map[string]any
	testenv.Eventually(t, 30*time.Second, "the SASL_PLAINTEXT control plane sees the tenant", func() bool {
		code, got = call(t, "GET", urlB+"/"+id, tok, nil)
		return code == http.StatusOK
	})
	if code, got = call(t, "POST", urlB+"/"+id+"/suspend", tok, nil); code != http.StatusOK || got["version"] != float64(2) {
		t.Fatalf("suspend over SASL_PLAINTEXT: %d %v", code, got)
	}
	testenv.Eventually(t, 30*time.Second, "the SASL_SSL control plane sees the suspension", func() bool {
		_, got = call(t, "GET", urlA+"/"+id, tok, nil)
		return got["status"] == "suspended" && got["version"] == float64(2)
	})
}
