package roi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

// seed writes a small, hand-computed state straight into the raw tables and
// rebuilds roi_daily from them (as migration 0204 does): P1 has two attributions of one conversion (an
// old version and the current one, plus a duplicate), a cost of 40 twice
// (duplicate) and two leads; P2 has one attribution.
func seed(t *testing.T) func(tenant string) http.Handler {
	cfg := testenv.Config(t)
	conn := testenv.ClickHouse(t, cfg)
	ctx := context.Background()
	now := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	b, err := conn.PrepareBatch(ctx, "INSERT INTO attributions (id, conversion_id, user_id, partner_id, model, kind, version, credit, revenue, new_customer, converted_at, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		id, conv, user, partner string
		version                 uint64
		credit, revenue, nc     string
	}{
		{"a1", "c1", "u1", "P1", 1, "1", "100", "1"},
		{"a1", "c1", "u1", "P1", 2, "0.5", "50", "0.5"},
		{"a1", "c1", "u1", "P1", 2, "0.5", "50", "0.5"},
		{"a2", "c1", "u1", "P2", 2, "0.5", "50", "0.5"},
	} {
		if err := b.Append(r.id, r.conv, r.user, r.partner, "linear", "purchase", r.version, d(r.credit), d(r.revenue), d(r.nc), now, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, "INSERT INTO costs (id, partner_id, amount, currency, amount_base, category, occurred_at, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.Append("k1", "P1", d("40"), "USD", d("40"), "fee", now, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, "INSERT INTO touchpoints (id, user_id, partner_id, source, utm_source, utm_medium, utm_campaign, referrer, region, trace_id, occurred_at, ingested_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u1", "u2", "u2"} {
		if err := b.Append("t-"+u, u, "P1", "utm", "", "", "", "", "", "", now, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	for _, st := range []chsql.Statement{chsql.TruncateRollup, chsql.RebuildRollup} {
		if err := conn.Exec(ctx, st.SQL); err != nil {
			t.Fatal(err)
		}
	}
	h := roi.Handler(roi.HandlerOptions{Conn: conn, DefaultWindow: 30, Log: slog.New(slog.DiscardHandler),
		TenantName: func(id string) (*schemas.Tenant, bool) { return &schemas.Tenant{ID: id, Name: "name of " + id}, true }})
	as := func(tenant string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tenant != "" {
				r = r.WithContext(authctx.WithTenant(r.Context(), &schemas.Tenant{ID: tenant}))
			}
			h(w, r)
		})
	}
	return as
}

func get(t *testing.T, h http.Handler, q url.Values) (int, roi.Response, map[string]any) {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/api/v1/analytics/roi?"+q.Encode(), nil))
	var resp roi.Response
	var prob map[string]any
	if rr.Code == http.StatusOK {
		if err := json.Unmarshal(rr.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
	} else {
		_ = json.Unmarshal(rr.Body.Bytes(), &prob)
		if ct := rr.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("error content type %q", ct)
		}
	}
	return rr.Code, resp, prob
}

func TestHandler(t *testing.T) {
	as := seed(t)
	linear := url.Values{"model": {"linear"}}

	code, resp, _ := get(t, as(""), linear)
	if code != 200 || len(resp.Rows) != 2 {
		t.Fatalf("admin, all partners: %d %+v", code, resp)
	}
	p1 := resp.Rows[0]
	// Exact despite an old version and duplicates: 50 revenue, 40 cost, 2 leads.
	if p1.PartnerID != "P1" || p1.Revenue != "50.00" || p1.Cost != "40.00" || p1.Leads != 2 || p1.Conversions != 0.5 ||
		*p1.ROI != 0.25 || *p1.CPL != "20.00" || *p1.CAC != "80.00" || *p1.LTV != "50.00" || *p1.LTVCAC != 0.625 || p1.PartnerName != "name of P1" {
		t.Fatalf("P1 row: %+v", p1)
	}
	if p2 := resp.Rows[1]; p2.PartnerID != "P2" || p2.Revenue != "50.00" || p2.ROI != nil || p2.CPL != nil {
		t.Fatalf("P2 row (no cost: ROI and CPL null): %+v", p2)
	}

	code, resp, _ = get(t, as("P1"), linear)
	if code != 200 || len(resp.Rows) != 1 || resp.Rows[0].PartnerID != "P1" {
		t.Fatalf("tenant P1, own numbers: %d %+v", code, resp)
	}
	if code, _, _ = get(t, as("P1"), url.Values{"partner_id": {"P2"}}); code != http.StatusForbidden {
		t.Fatalf("tenant P1 reading P2: %d, want 403", code)
	}
	code, resp, _ = get(t, as(""), url.Values{"partner_id": {"P2"}})
	if code != 200 || len(resp.Rows) != 5 {
		t.Fatalf("admin, P2, every model: %d %+v", code, resp)
	}
	for _, w := range []string{"0", "3651", "-1", "abc", "30; DROP TABLE costs"} {
		code, _, prob := get(t, as(""), url.Values{"window": {w}})
		if code != http.StatusBadRequest || prob["field"] != "window" {
			t.Fatalf("window %q: %d %v, want 400 naming the field", w, code, prob)
		}
	}
	if code, _, prob := get(t, as(""), url.Values{"model": {"best"}}); code != http.StatusBadRequest || prob["field"] != "model" {
		t.Fatalf("bad model: %d %v", code, prob)
	}
	// Ids are bound, never spliced into SQL: a hostile id is just an id.
	code, resp, _ = get(t, as(""), url.Values{"partner_id": {"P1' OR '1'='1"}, "model": {"linear"}})
	if code != 200 || len(resp.Rows) != 1 || resp.Rows[0].Revenue != "0.00" || resp.Rows[0].Leads != 0 {
		t.Fatalf("hostile partner id: %d %+v", code, resp)
	}
	code, resp, _ = get(t, as(""), url.Values{"window": {"3650"}, "model": {"linear"}, "partner_id": {"P1"}})
	if code != 200 || resp.WindowDays != 3650 || resp.Rows[0].Revenue != "50.00" {
		t.Fatalf("max window: %d %+v", code, resp)
	}
}
