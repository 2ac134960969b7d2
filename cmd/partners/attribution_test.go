package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestROICommand runs partners dev, onboards two partners, streams a
// touchpoint, a conversion in EUR and a cost for the first into Kafka, and
// reads the numbers back with `partners roi` (JSON and table) and with the
// first partner's API key (its own numbers; the other partner's are 403).
func TestROICommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testenv.ClickHouse(t, testenv.Config(t))
	bin := buildBinary(t)
	env := devEnv(t)
	stop, _ := startDev(t, bin, env)
	defer stop()
	var admin, port string
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PARTNERS_ADMIN_URL="); ok {
			admin = v
		}
		if v, ok := strings.CutPrefix(e, "PARTNERS_KAFKA_EMBEDDED_PORT="); ok {
			port = v
		}
	}
	create := func(name string) (id, key string) {
		out, err := run(t, bin, env, "tenants", "create", "--name", name, "--tier", "standard", "--webhook-url", "http://127.0.0.1:9999/hook")
		if err != nil {
			t.Fatalf("tenants create: %v\n%s", err, out)
		}
		var c struct {
			ID     string `json:"id"`
			APIKey string `json:"api_key"`
		}
		if err := json.Unmarshal([]byte(out), &c); err != nil {
			t.Fatalf("create output: %s", out)
		}
		return c.ID, c.APIKey
	}
	a, keyA := create("Acme")
	b, _ := create("Globex")

	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:" + port))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	now := time.Now().UTC().Truncate(time.Second)
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	recs := []*kgo.Record{
		{Topic: schemas.TopicTouchpoints, Key: []byte("u1"), Value: js(schemas.Touchpoint{SchemaVersion: "1", ID: "t1", UserID: "u1", PartnerID: a, Source: "api_key", OccurredAt: now.Add(-time.Hour)})},
		{Topic: schemas.TopicConversions, Key: []byte("u1"), Value: js(schemas.Conversion{SchemaVersion: "1", ID: "c1", UserID: "u1", Kind: "purchase", Amount: decimal.RequireFromString("100"), Currency: "EUR", NewCustomer: true, OccurredAt: now})},
		{Topic: schemas.TopicCosts, Key: []byte(a), Value: js(schemas.Cost{SchemaVersion: "1", ID: "k1", PartnerID: a, Amount: decimal.RequireFromString("27"), Currency: "USD", OccurredAt: now})},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// 100 EUR at 1.08 = 108.00 USD; ROI (108 − 27)/27 = 3; CPL 27/1; CAC 27/1; LTV 108; LTV:CAC 4.
	var out string
	testenv.Eventually(t, 60*time.Second, "the conversion in partners roi", func() bool {
		out, err = run(t, bin, env, "roi", "--partner-id", a, "--window", "7", "--model", "last_touch", "--format", "json")
		return err == nil && strings.Contains(out, `"revenue": "108.00"`)
	})
	var resp struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Rows) != 1 {
		t.Fatalf("roi json: %v\n%s", err, out)
	}
	r := resp.Rows[0]
	if r["partner_name"] != "Acme" || r["cost"] != "27.00" || r["roi"] != 3.0 || r["cpl"] != "27.00" || r["cac"] != "27.00" || r["ltv"] != "108.00" || r["ltv_cac"] != 4.0 {
		t.Fatalf("roi row: %v", r)
	}
	// The table names the partner and prints what the demo prints: money
	// to the cent, every other number as the server sent it (never the id,
	// never padded to 4 decimals).
	table, err := run(t, bin, env, "roi", "--partner-id", a, "--window", "7")
	if err != nil || !strings.Contains(table, "PARTNER") || strings.Contains(table, a) {
		t.Fatalf("roi table (%v), want the partner's name, not its id %s:\n%s", err, a, table)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	// PARTNER MODEL REVENUE COST CONVERSIONS LEADS NEW CUST CUSTOMERS ROI CPL CAC LTV LTV:CAC
	if want := []string{"Acme", "last_touch", "108.00", "27.00", "1", "1", "1", "1", "3", "27.00", "27.00", "108.00", "4"}; strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Fatalf("roi table row %q, want %q:\n%s", fields, want, table)
	}
	if out, err := run(t, bin, env, "roi", "--partner-id", a, "--window", "0"); err == nil || !strings.Contains(out, "window") {
		t.Fatalf("--window 0 accepted: %s", out)
	}

	get := func(partner string) int {
		req, _ := http.NewRequest(http.MethodGet, admin+"/api/v1/analytics/roi?window=7&partner_id="+partner, nil)
		req.Header.Set("Authorization", "Bearer "+keyA)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := get(a); code != http.StatusOK {
		t.Fatalf("partner key, own numbers: %d", code)
	}
	if code := get(b); code != http.StatusForbidden {
		t.Fatalf("partner key, another partner: %d, want 403", code)
	}
}
