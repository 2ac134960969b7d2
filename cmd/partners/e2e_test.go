package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/partners-engine/partners-engine/cmd/partners/internal/demo"
	"github.com/partners-engine/partners-engine/control-plane/adminclient"
	"github.com/partners-engine/partners-engine/internal/runner"
	"github.com/partners-engine/partners-engine/internal/telemetry/otlptest"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

type span = otlptest.Span

// TestEndToEnd runs every component in-process on the test brokers (real
// Apache Kafka under make test) and the real ClickHouse, drives the demo
// scenario, asserts its numbers, and checks over the wire (OTLP) that one
// trace links the product event, the fan-out and every delivery attempt, and
// that the delivery log holds that trace id.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	sink := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+sink.Endpoint())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "200")

	cfg := testenv.Config(t)
	cfg.Kafka.Brokers = testenv.Brokers(t)
	conn := testenv.ClickHouse(t, cfg) // fresh migrated database, dropped at cleanup
	cfg.Listeners.Admin = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Listeners.XDS = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Listeners.ExtAuthz = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.XDS.ExtAuthzCluster = cfg.Listeners.ExtAuthz
	cfg.Admin.URL = "http://" + cfg.Listeners.Admin
	cfg.Partner.Webhooks.Breaker.Open = 500 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	log := logs.Logger(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Every component in this process, as `partners dev` runs them; the
	// global tracer provider exports over OTLP (OTEL_* above).
	r, err := runner.New(runner.Options{Mode: runner.Dev, Config: cfg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testenv.Eventually(t, 60*time.Second, "admin API ready", func() bool {
		resp, err := http.Get(cfg.Admin.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// The README's quick-start tenant (nothing listens at its URL) and the
	// tenant of an earlier demo run: the demo sends neither anything, and it
	// suspends the earlier run's.
	api, err := adminclient.NewClientWithResponses(cfg.Admin.URL, adminclient.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	bystanders := map[string]string{} // name -> id
	for _, name := range []string{"Acme", "Demo Sandbox 123456"} {
		resp, err := api.CreateTenantWithResponse(ctx, adminclient.CreateTenant{Name: name, Tier: "sandbox", WebhookUrl: "http://127.0.0.1:9999/hook"})
		if err != nil || resp.JSON201 == nil {
			t.Fatalf("create %s: %v %s", name, err, resp.Body)
		}
		bystanders[name] = resp.JSON201.Id
	}

	const events, users = 15, 9
	res, err := demo.Run(ctx, demo.Options{Config: cfg, Brokers: cfg.Kafka.Brokers, AdminURL: cfg.Admin.URL,
		AdminToken: cfg.Admin.Token, ExtAuthz: cfg.Listeners.ExtAuthz, ClickHouse: conn, Events: events, Users: users,
		Settle: 2 * time.Minute, Progress: testWriter{t}, Verify: officialVerifier})
	if res != nil {
		var b strings.Builder
		res.Print(&b)
		t.Log(b.String())
	}
	if err != nil {
		t.Fatal(err)
	}

	for name, id := range bystanders {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM webhook_deliveries WHERE tenant_id = ?", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("tenant %s, not the demo's: %d delivery attempts of the demo's events", name, n)
		}
		got, err := api.GetTenantWithResponse(ctx, id)
		if err != nil || got.JSON200 == nil {
			t.Fatalf("get %s: %v", name, err)
		}
		want := "active"
		if strings.HasPrefix(name, "Demo ") {
			want = "suspended" // an earlier run's: its receiver is gone
		}
		if string(got.JSON200.Status) != want {
			t.Errorf("tenant %s after the demo: %s, want %s", name, got.JSON200.Status, want)
		}
	}

	// Edge: every partner call allowed, the missing key 401, the unknown key 403.
	if res.Checks["401"] != 1 || res.Checks["403"] != 1 || res.Checks["ok"] == 0 {
		t.Errorf("authz decisions: %v", res.Checks)
	}
	healthy, flaky, down := res.Tenants[0].Name, res.Tenants[1].Name, res.Tenants[2].Name
	if got := res.Deliveries[healthy]["delivered"]; got != events {
		t.Errorf("healthy partner: %d delivered, want %d", got, events)
	}
	if got := res.Deliveries[flaky]["delivered"]; got != events {
		t.Errorf("flaky partner: %d delivered, want %d", got, events)
	}
	if got := res.Deliveries[flaky]["retry"]; got != (events+1)/2 {
		t.Errorf("flaky partner: %d webhook ids retried, want %d (every other first attempt fails)", got, (events+1)/2)
	}
	if got := res.Deliveries[down]["delivered"]; got != 0 {
		t.Errorf("down partner: %d delivered", got)
	}
	if res.DLQ[down] != events || res.DLQ[healthy] != 0 || res.DLQ[flaky] != 0 {
		t.Errorf("DLQ: %v, want only the down partner's %d", res.DLQ, events)
	}
	if res.Received[healthy] != events || res.Received[flaky] != events+(events+1)/2 {
		t.Errorf("signature-verified requests received: %v", res.Received)
	}
	if res.BadSigs != 0 {
		t.Errorf("%d webhook requests failed Standard Webhooks verification", res.BadSigs)
	}

	// ROI: every model credits each conversion fully across the partners
	// that touched the user, so per model the partners' revenue adds up to
	// the converted revenue in USD (EUR at the configured rate), refund
	// deducted.
	want := decimal.Zero
	eur, _ := decimal.NewFromString(cfg.Partner.Attribution.CurrencyRates["EUR"])
	for u := 0; u < users; u++ {
		if u%3 == 2 || u == 0 { // scenario: u%3==2 never converts; user 0's purchase is refunded
			continue
		}
		amt := decimal.NewFromInt(int64(100 + 10*u))
		if u%2 == 1 {
			amt = amt.Mul(eur)
		}
		want = want.Add(amt.Round(2))
	}
	perModel := map[string]decimal.Decimal{}
	for _, row := range res.ROI {
		v, err := decimal.NewFromString(row.Revenue)
		if err != nil {
			t.Fatalf("revenue %q: %v", row.Revenue, err)
		}
		perModel[row.Model] = perModel[row.Model].Add(v)
	}
	if len(perModel) != 5 {
		t.Errorf("ROI models: %v", perModel)
	}
	for m, got := range perModel {
		if !got.Round(2).Equal(want.Round(2)) {
			t.Errorf("model %s: partners' revenue adds up to %s, want %s", m, got, want)
		}
	}

	// Tracing, over the wire: stop everything so spans are flushed.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runner: %v", err)
	}
	if res.TraceID == "" {
		t.Fatal("the delivery log has no trace id")
	}
	all := sink.Spans()
	var inTrace []span
	for _, s := range all {
		if s.TraceID == res.TraceID {
			inTrace = append(inTrace, s)
		}
	}
	var names []string
	producers, attempts, fanouts := 0, 0, 0
	for _, s := range inTrace {
		names = append(names, s.Name+"("+s.Kind+")")
		if s.Kind == "Producer" && strings.Contains(s.Name, "partners.events.v1") {
			producers++
		}
		if s.Attrs["webhook.attempt"] != "" || strings.Contains(s.Name, "attempt") {
			attempts++
		}
		if s.Name == "webhooks fan-out" && s.Kind == "Consumer" {
			fanouts++
		}
	}
	t.Logf("trace %s: %d spans: %v", res.TraceID, len(inTrace), names)
	if producers == 0 {
		t.Errorf("the delivery's trace does not contain the product event's publish span")
	}
	byID := map[string]span{}
	for _, s := range inTrace {
		byID[s.SpanID] = s
	}
	for _, s := range inTrace {
		if s.Name == "webhooks fan-out" {
			if p, ok := byID[s.Parent]; !ok || p.Kind != "Producer" {
				t.Errorf("the fan-out span's parent is not the event's publish span")
			}
		}
		if s.Name == "webhook attempt" && s.Attrs["webhook.attempt"] == "1" {
			if p, ok := byID[s.Parent]; !ok || p.Name != "webhooks fan-out" {
				t.Errorf("a first attempt's parent is %q, want the fan-out span", p.Name)
			}
		}
	}
	if fanouts != 1 {
		t.Errorf("the delivery's trace holds %d fan-out spans, want 1", fanouts)
	}
	if attempts < 2 {
		t.Errorf("the retried flaky delivery's trace holds %d attempt spans, want both (the failed first and its retry)", attempts)
	}
	for _, secret := range []string{res.Tenants[0].Key, res.Tenants[0].Secret, cfg.Partner.Keys.Pepper} {
		if strings.Contains(logs.String(), secret) {
			t.Error("a key, secret or the pepper reached the logs")
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// officialVerifier checks every webhook with the official Standard
// Webhooks library (which the binary does not link).
func officialVerifier(secret string, body []byte, h http.Header) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	return wh.Verify(body, h)
}
