package adminapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/control-plane/adminapi"
	"github.com/partners-engine/partners-engine/control-plane/registry/registrytest"
	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/httpx"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/runner/routes"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores(
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	)...)
}

// contract validates exchanges against schemas/openapi/openapi.yaml.
type contract struct {
	t      *testing.T
	router routers.Router
	base   string
	token  string
}

func newContract(t *testing.T, base, token string) *contract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(schemas.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("openapi spec invalid: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: base}}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{t: t, router: r, base: base, token: token}
}

type exchange struct {
	status  int
	body    []byte
	headers http.Header
}

func (e exchange) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(e.body, v); err != nil {
		t.Fatalf("decode %s: %v", e.body, err)
	}
}

// do sends a request and validates the response (always) and the request
// (when validRequest: negative tests send requests the spec forbids).
func (c *contract) do(method, path, token string, body any, validRequest bool) exchange {
	c.t.Helper()
	return c.doH(method, path, token, body, validRequest, nil)
}

// doH is do with extra request headers.
func (c *contract) doH(method, path, token string, body any, validRequest bool, hdr http.Header) exchange {
	c.t.Helper()
	var rd io.Reader
	var raw []byte
	if body != nil {
		if s, ok := body.(string); ok {
			raw = []byte(s)
		} else {
			raw, _ = json.Marshal(body)
		}
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Fatalf("%s %s: not in the OpenAPI spec: %v", method, path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if validRequest {
		vreq := req.Clone(context.Background())
		if raw != nil {
			vreq.Body = io.NopCloser(bytes.NewReader(raw))
		}
		in.Request = vreq
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			c.t.Fatalf("%s %s: request violates the spec: %v", method, path, err)
		}
		in.Request = req
		if raw != nil {
			req.Body = io.NopCloser(bytes.NewReader(raw))
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	out.SetBodyBytes(rb)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		c.t.Fatalf("%s %s → %d: response violates the spec: %v\n%s", method, path, resp.StatusCode, err, rb)
	}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		c.t.Fatalf("%s %s → %d with Content-Type %q, want problem+json", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return exchange{status: resp.StatusCode, body: rb, headers: resp.Header}
}

type fixture struct {
	cfg  *config.Config
	c    *contract
	logs *testenv.LogBuffer
}

func setup(t *testing.T) *fixture {
	cfg := testenv.Config(t)
	logs := &testenv.LogBuffer{}
	log := logs.Logger(t)
	brokers, cl := testenv.Kafka(t, cfg)
	return &fixture{cfg: cfg, c: serve(t, cfg, brokers, cl, log), logs: logs}
}

// serve starts an admin API server as one process runs it: its own
// registry following cfg's tenants topic and its own writer on cl.
func serve(t *testing.T, cfg *config.Config, brokers []string, cl *kgo.Client, log *slog.Logger) *contract {
	reg := registrytest.Start(t, cfg, brokers, log)
	w := registrytest.Writer(cfg, reg, cl, time.Hour)
	srv := adminapi.New(adminapi.Options{Token: cfg.Admin.Token, Pepper: cfg.Partner.Keys.Pepper, Registry: reg, Writer: w,
		Limits: cfg.Partner.RateLimit, Gatherer: prometheus.NewRegistry(), Log: log, Regions: cfg.RegionNames(), Features: cfg.Partner.Gateway.FeatureNames()})
	if err := srv.Mount(routes.Of(routes.Ops, routes.Tenants), srv.Handlers()); err != nil {
		t.Fatal(err)
	}
	srv.HandleTenant("GET /api/v1/analytics/roi", true, func(w http.ResponseWriter, r *http.Request) {
		t, _ := authctx.TenantFrom(r.Context())
		id := ""
		if t != nil {
			id = t.ID
		}
		w.Header().Set("X-Test-Tenant", id)
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"rows": []any{}, "window_days": 30, "from": "2026-01-01", "to": "2026-01-30"})
	})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return newContract(t, hs.URL, cfg.Admin.Token)
}

func TestTenantLifecycleMatchesSpec(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c, tok := f.c, f.cfg.Admin.Token
	res := c.do("POST", "/api/v1/tenants", tok, map[string]any{
		"name": "Acme", "tier": "sandbox", "webhook_url": "http://127.0.0.1:9999/hook", "events": []string{"order.created"}}, true)
	if res.status != http.StatusCreated {
		t.Fatalf("create: %d %s", res.status, res.body)
	}
	var created struct {
		ID            string `json:"id"`
		APIKey        string `json:"api_key"`
		WebhookSecret string `json:"webhook_secret"`
		Effective     struct {
			RequestsPerMinute int `json:"requests_per_minute"`
		} `json:"effective_rate_limit"`
	}
	res.json(t, &created)
	if created.ID == "" || created.APIKey == "" || !strings.HasPrefix(created.WebhookSecret, "whsec_") {
		t.Fatalf("create response lacks credentials: %s", res.body)
	}
	if created.Effective.RequestsPerMinute != 20 {
		t.Fatalf("sandbox effective rate limit: %d", created.Effective.RequestsPerMinute)
	}

	res = c.do("GET", "/api/v1/tenants", tok, nil, true)
	if res.status != 200 || !strings.Contains(string(res.body), created.ID) {
		t.Fatalf("list: %d %s", res.status, res.body)
	}
	for _, leak := range []string{created.APIKey, created.WebhookSecret, `"hash"`} {
		if strings.Contains(string(res.body), leak) {
			t.Fatalf("list shows a credential or hash")
		}
	}
	res = c.do("GET", "/api/v1/tenants/"+created.ID, tok, nil, true)
	if res.status != 200 {
		t.Fatalf("get: %d", res.status)
	}
	res = c.do("PATCH", "/api/v1/tenants/"+created.ID, tok, map[string]any{
		"tier": "enterprise", "rate_limit": map[string]int{"requests_per_minute": 600, "burst_size": 100}, "features": map[string]bool{"reports": true}}, true)
	if res.status != 200 || !strings.Contains(string(res.body), `"enterprise"`) {
		t.Fatalf("patch: %d %s", res.status, res.body)
	}
	// An enterprise tenant's client-certificate identities, set and shown
	// (the exchange is checked against the spec like every other).
	res = c.do("PATCH", "/api/v1/tenants/"+created.ID, tok, map[string]any{
		"client_identities": []string{"spiffe://acme.example/orders-sync", "client.acme.example"}}, true)
	var withIDs struct {
		ClientIdentities []string `json:"client_identities"`
	}
	res.json(t, &withIDs)
	if res.status != 200 || strings.Join(withIDs.ClientIdentities, ",") != "spiffe://acme.example/orders-sync,client.acme.example" {
		t.Fatalf("patch client_identities: %d %s", res.status, res.body)
	}
	res = c.do("POST", "/api/v1/tenants/"+created.ID+"/suspend", tok, nil, true)
	if res.status != 200 || !strings.Contains(string(res.body), `"suspended"`) {
		t.Fatalf("suspend: %d %s", res.status, res.body)
	}
	res = c.do("POST", "/api/v1/tenants/"+created.ID+"/activate", tok, nil, true)
	if res.status != 200 || !strings.Contains(string(res.body), `"active"`) {
		t.Fatalf("activate: %d %s", res.status, res.body)
	}
	res = c.do("POST", "/api/v1/tenants/"+created.ID+"/rotate-key", tok, nil, true)
	var rotated struct {
		APIKey string `json:"api_key"`
	}
	res.json(t, &rotated)
	if res.status != 200 || rotated.APIKey == "" || rotated.APIKey == created.APIKey {
		t.Fatalf("rotate-key: %d", res.status)
	}
	res = c.do("POST", "/api/v1/tenants/"+created.ID+"/rotate-secret", tok, nil, true)
	var rs struct {
		WebhookSecret string `json:"webhook_secret"`
	}
	res.json(t, &rs)
	if res.status != 200 || !strings.HasPrefix(rs.WebhookSecret, "whsec_") {
		t.Fatalf("rotate-secret: %d", res.status)
	}

	// A tenant key authenticates tenant routes; the admin token too.
	for _, key := range []string{created.APIKey, rotated.APIKey} {
		res = c.do("GET", "/api/v1/analytics/roi", key, nil, true)
		if res.status != 200 || res.headers.Get("X-Test-Tenant") != created.ID {
			t.Fatalf("tenant key on tenant route: %d %s", res.status, res.body)
		}
	}
	c.do("POST", "/api/v1/tenants/"+created.ID+"/suspend", tok, nil, true)
	if res = c.do("GET", "/api/v1/analytics/roi", rotated.APIKey, nil, true); res.status != http.StatusForbidden {
		t.Fatalf("suspended tenant key: want 403, got %d", res.status)
	}

	for _, secret := range []string{created.APIKey, created.WebhookSecret, rotated.APIKey, rs.WebhookSecret, f.cfg.Partner.Keys.Pepper, tok} {
		if strings.Contains(f.logs.String(), secret) {
			t.Fatal("a key, secret, token or the pepper appears in the logs")
		}
	}
}

func TestBadInputGetsProblems(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c, tok := f.c, f.cfg.Admin.Token
	ok := c.do("POST", "/api/v1/tenants", tok, map[string]any{"name": "Dup", "tier": "standard", "webhook_url": "https://a.example/h"}, true)
	if ok.status != 201 {
		t.Fatalf("setup create: %d %s", ok.status, ok.body)
	}
	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		field                     string
	}{
		{"unknown tier", "POST", "/api/v1/tenants", tok, map[string]any{"name": "A", "tier": "gold", "webhook_url": "https://a.example/h"}, 400, "tier"},
		{"malformed url", "POST", "/api/v1/tenants", tok, map[string]any{"name": "B", "tier": "sandbox", "webhook_url": "not a url"}, 400, "webhook_url"},
		{"duplicate name", "POST", "/api/v1/tenants", tok, map[string]any{"name": "dup", "tier": "sandbox", "webhook_url": "https://a.example/h"}, 409, ""},
		{"missing token", "GET", "/api/v1/tenants", "", nil, 401, ""},
		{"wrong token", "GET", "/api/v1/tenants", "wrong-token-value", nil, 401, ""},
		{"tenant key is not admin", "GET", "/api/v1/tenants", "pk_sbx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", nil, 401, ""},
		{"unknown key on tenant route", "GET", "/api/v1/analytics/roi", "pk_sbx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", nil, 401, ""},
		{"malformed JSON", "POST", "/api/v1/tenants", tok, `{"name":`, 400, ""},
		{"unknown field", "POST", "/api/v1/tenants", tok, map[string]any{"name": "C", "tier": "sandbox", "webhook_url": "https://a.example/h", "colour": "red"}, 400, ""},
		{"unknown tenant", "GET", "/api/v1/tenants/tn_0000000000000000", tok, nil, 404, ""},
		{"bad status filter", "GET", "/api/v1/tenants?status=deleted", tok, nil, 400, "status"},
		{"client identities off enterprise", "POST", "/api/v1/tenants", tok, map[string]any{"name": "D", "tier": "standard", "webhook_url": "https://a.example/h",
			"client_identities": []string{"spiffe://a.example/x"}}, 400, "client_identities"},
		{"client identity with a space", "POST", "/api/v1/tenants", tok, map[string]any{"name": "E", "tier": "enterprise", "webhook_url": "https://a.example/h",
			"client_identities": []string{"not an identity"}}, 400, "client_identities[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub := *c
			sub.t = t
			res := sub.do(tc.method, tc.path, tc.token, tc.body, false)
			if res.status != tc.status {
				t.Fatalf("want %d, got %d: %s", tc.status, res.status, res.body)
			}
			var p struct {
				Type, Title, Detail, Field string
				Status                     int
			}
			res.json(t, &p)
			if p.Status != tc.status || p.Title == "" || p.Type == "" {
				t.Fatalf("problem body incomplete: %s", res.body)
			}
			if p.Field != tc.field {
				t.Fatalf("problem field %q, want %q", p.Field, tc.field)
			}
			if tc.status == 401 && res.headers.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

type tenantBody struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Version   int64  `json:"version"`
	RateLimit *struct {
		RequestsPerMinute int `json:"requests_per_minute"`
	} `json:"rate_limit"`
}

type conflictBody struct {
	Status         int    `json:"status"`
	Detail         string `json:"detail"`
	CurrentVersion int64  `json:"current_version"`
}

// TestTwoAdminProcessesRace: two admin API servers, each with its own
// registry, writer and Kafka clients as two processes have, race 100 rounds
// of suspend/activate on one against PATCH on the other. Every 200 is
// applied (read back from both), every loser is a 409 problem naming the
// current version in current_version and the ETag, and every exchange
// matches the spec.
func TestTwoAdminProcessesRace(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	log := slog.New(slog.DiscardHandler)
	brokers, cl := testenv.Kafka(t, cfg)
	clB, err := kafka.NewClient(cfg.Kafka, brokers, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(clB.Close)
	a, b := serve(t, cfg, brokers, cl, log), serve(t, cfg, brokers, clB, log)
	tok := cfg.Admin.Token
	res := a.do("POST", "/api/v1/tenants", tok, map[string]any{"name": "Race", "tier": "standard", "webhook_url": "https://partner.example/hook"}, true)
	if res.status != http.StatusCreated {
		t.Fatalf("create: %d %s", res.status, res.body)
	}
	var tn tenantBody
	res.json(t, &tn)
	version := tn.Version
	oks, conflicts := 0, 0
	for i := 0; i < 100; i++ {
		action, status := "suspend", "suspended"
		if i%2 == 1 {
			action, status = "activate", "active"
		}
		rpm := 100 + i
		var ra, rb exchange
		var wg sync.WaitGroup
		wg.Add(2)
		ca, cb := *a, *b
		go func() { defer wg.Done(); ra = ca.do("POST", "/api/v1/tenants/"+tn.ID+"/"+action, tok, nil, true) }()
		go func() {
			defer wg.Done()
			rb = cb.do("PATCH", "/api/v1/tenants/"+tn.ID, tok, map[string]any{"rate_limit": map[string]int{"requests_per_minute": rpm, "burst_size": 10}}, true)
		}()
		wg.Wait()
		won := 0
		for _, r := range []exchange{ra, rb} {
			switch r.status {
			case http.StatusOK:
				won++
				oks++
			case http.StatusConflict:
				conflicts++
				var p conflictBody
				r.json(t, &p)
				if p.CurrentVersion <= version || r.headers.Get("ETag") != fmt.Sprintf(`"%d"`, p.CurrentVersion) {
					t.Fatalf("round %d: 409 does not name the current version: %s (ETag %q)", i, r.body, r.headers.Get("ETag"))
				}
			default:
				t.Fatalf("round %d: %d %s", i, r.status, r.body)
			}
		}
		if won == 0 {
			t.Fatalf("round %d: both lost", i)
		}
		version += int64(won)
		for _, c := range []*contract{a, b} {
			var got tenantBody
			deadline := time.Now().Add(10 * time.Second)
			for {
				g := c.do("GET", "/api/v1/tenants/"+tn.ID, tok, nil, true)
				g.json(t, &got)
				if got.Version >= version || time.Now().After(deadline) {
					if g.headers.Get("ETag") != fmt.Sprintf(`"%d"`, got.Version) {
						t.Fatalf("GET ETag %q for version %d", g.headers.Get("ETag"), got.Version)
					}
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if got.Version != version {
				t.Fatalf("round %d: version %d, want %d (one per 200)", i, got.Version, version)
			}
			if ra.status == http.StatusOK && got.Status != status {
				t.Fatalf("round %d: %s answered 200 but the tenant is %s", i, action, got.Status)
			}
			if rb.status == http.StatusOK && (got.RateLimit == nil || got.RateLimit.RequestsPerMinute != rpm) {
				t.Fatalf("round %d: PATCH answered 200 but the rate limit is %+v", i, got.RateLimit)
			}
		}
	}
	t.Logf("100 rounds over two servers: %d × 200, %d × 409 (kafka real=%v)", oks, conflicts, testenv.RealKafka())
}

// TestIfMatch: a write with the current ETag applies, a stale one is a 409
// naming the current version, a malformed one a 400 naming the header.
func TestIfMatch(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c, tok := f.c, f.cfg.Admin.Token
	res := c.do("POST", "/api/v1/tenants", tok, map[string]any{"name": "Cond", "tier": "standard", "webhook_url": "https://partner.example/hook"}, true)
	var tn tenantBody
	res.json(t, &tn)
	if res.headers.Get("ETag") != `"1"` {
		t.Fatalf("create ETag %q", res.headers.Get("ETag"))
	}
	h := func(v string) http.Header { return http.Header{"If-Match": {v}} }
	res = c.doH("POST", "/api/v1/tenants/"+tn.ID+"/suspend", tok, nil, true, h(`"1"`))
	if res.status != 200 || res.headers.Get("ETag") != `"2"` {
		t.Fatalf("If-Match current: %d %s", res.status, res.headers.Get("ETag"))
	}
	res = c.doH("PATCH", "/api/v1/tenants/"+tn.ID, tok, map[string]any{"features": map[string]bool{"reports": true}}, true, h(`"1"`))
	var p conflictBody
	res.json(t, &p)
	if res.status != http.StatusConflict || p.CurrentVersion != 2 || !strings.Contains(p.Detail, "version 2") {
		t.Fatalf("stale If-Match: %d %s", res.status, res.body)
	}
	res = c.doH("POST", "/api/v1/tenants/"+tn.ID+"/activate", tok, nil, true, h(`"7", "2"`))
	if res.status != 200 {
		t.Fatalf("If-Match list holding the current version: %d %s", res.status, res.body)
	}
	for _, bad := range []string{"3", `W/"3"x`, `"abc"`} {
		res = c.doH("POST", "/api/v1/tenants/"+tn.ID+"/suspend", tok, nil, false, h(bad))
		var pb struct{ Field string }
		res.json(t, &pb)
		if res.status != http.StatusBadRequest || pb.Field != "If-Match" {
			t.Fatalf("If-Match %q: %d %s", bad, res.status, res.body)
		}
	}
	res = c.doH("POST", "/api/v1/tenants/"+tn.ID+"/suspend", tok, nil, true, h(`W/"3"`))
	if res.status != http.StatusConflict {
		t.Fatalf("a weak ETag must not match: %d", res.status)
	}
	res = c.doH("POST", "/api/v1/tenants/"+tn.ID+"/suspend", tok, nil, true, h(`*`))
	if res.status != 200 {
		t.Fatalf("If-Match *: %d", res.status)
	}
}

// TestServerEnforcesTheSpec: what the spec forbids is refused before any
// handler runs (the DLQ and ROI handlers here are stubs that would answer
// 200), what it allows reaches the handler, undeclared methods get 405 with
// Allow, another body type 415, an oversized body 413 — each a problem.
func TestServerEnforcesTheSpec(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	log := slog.New(slog.DiscardHandler)
	brokers, cl := testenv.Kafka(t, cfg)
	reg := registrytest.Start(t, cfg, brokers, log)
	srv := adminapi.New(adminapi.Options{Token: cfg.Admin.Token, Pepper: cfg.Partner.Keys.Pepper, Registry: reg,
		Writer: registrytest.Writer(cfg, reg, cl, time.Hour), Limits: cfg.Partner.RateLimit, Log: log,
		Regions: cfg.RegionNames(), Features: cfg.Partner.Gateway.FeatureNames()})
	handlers := srv.Handlers()
	reached := map[string]int{}
	var mu sync.Mutex
	stub := func(op string, body any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			reached[op]++
			mu.Unlock()
			httpx.WriteJSON(w, http.StatusOK, body)
		}
	}
	handlers["listDLQ"] = stub("listDLQ", map[string]any{"dead_letters": []any{}})
	handlers["replayDLQ"] = stub("replayDLQ", map[string]any{"replayed": 0, "skipped": 0})
	handlers["recoverEndpoint"] = stub("recoverEndpoint", map[string]any{"replayed": 0, "skipped": 0})
	handlers["testWebhook"] = stub("testWebhook", map[string]any{"results": []any{}})
	handlers["getROI"] = stub("getROI", map[string]any{"window_days": 30, "from": "2026-01-01", "to": "2026-01-30", "rows": []any{}})
	if err := srv.Mount(routes.Of(routes.Ops, routes.Tenants, routes.DLQ, routes.Analytics), handlers); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	c := newContract(t, hs.URL, cfg.Admin.Token)
	tok := cfg.Admin.Token
	res := c.do("POST", "/api/v1/tenants", tok, map[string]any{"name": "Spec", "tier": "standard", "webhook_url": "https://a.example/h"}, true)
	var tn tenantBody
	res.json(t, &tn)

	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		field              string
	}{
		{"empty tier", "POST", "/api/v1/tenants", map[string]any{"name": "X", "tier": "", "webhook_url": "https://a.example/h"}, 400, "tier"},
		{"null PATCH body", "PATCH", "/api/v1/tenants/" + tn.ID, "null", 400, ""},
		{"array PATCH body", "PATCH", "/api/v1/tenants/" + tn.ID, "[]", 400, ""},
		{"unconfigured region", "POST", "/api/v1/tenants", map[string]any{"name": "X", "tier": "standard", "webhook_url": "https://a.example/h", "regions": []string{"mars"}}, 400, "regions[0]"},
		{"unconfigured feature", "PATCH", "/api/v1/tenants/" + tn.ID, map[string]any{"features": map[string]bool{"beta": true}}, 400, "features"},
		{"control character in name", "POST", "/api/v1/tenants", map[string]any{"name": "A\u202eB", "tier": "standard", "webhook_url": "https://a.example/h"}, 400, "name"},
		{"empty status filter", "GET", "/api/v1/tenants?status=", nil, 400, "status"},
		{"empty model", "GET", "/api/v1/analytics/roi?model=", nil, 400, "model"},
		{"empty limit", "GET", "/api/v1/dlq?limit=", nil, 400, "limit"},
		{"limit over the maximum", "GET", "/api/v1/dlq?limit=10001", nil, 400, "limit"},
		{"since not a time", "GET", "/api/v1/dlq?since=yesterday", nil, 400, "since"},
		{"negative since", "GET", "/api/v1/dlq?since=-5h", nil, 400, "since"},
		{"unknown reason", "POST", "/api/v1/dlq/replay?reason=bad_luck", nil, 400, "reason"},
		{"window zero", "GET", "/api/v1/analytics/roi?window=0", nil, 400, "window"},
		{"bad tenant id", "GET", "/api/v1/tenants/abc", nil, 400, "id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub := *c
			sub.t = t
			r := sub.do(tc.method, tc.path, tok, tc.body, false)
			var p struct{ Field string }
			r.json(t, &p)
			if r.status != tc.status || p.Field != tc.field {
				t.Fatalf("want %d naming %q, got %d %s", tc.status, tc.field, r.status, r.body)
			}
		})
	}
	if len(reached) != 0 {
		t.Fatalf("refused requests reached handlers: %v", reached)
	}
	// What the spec allows reaches the handlers.
	for _, path := range []string{"/api/v1/dlq?since=24h&until=2026-01-02T03:04:05Z&limit=5&status=all", "/api/v1/analytics/roi?window=7&model=linear"} {
		if r := c.do("GET", path, tok, nil, true); r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}
	if reached["listDLQ"] != 1 || reached["getROI"] != 1 {
		t.Fatalf("allowed requests did not reach their handlers: %v", reached)
	}

	send := func(method, path, ctype, body string) *http.Response {
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, m := range []struct{ method, path, allow string }{
		{"DELETE", "/api/v1/tenants/" + tn.ID, "GET, HEAD, PATCH"},
		{"PUT", "/api/v1/tenants", "GET, HEAD, POST"},
		{"POST", "/healthz", "GET, HEAD"},
		{"GET", "/api/v1/dlq/replay", "POST"},
	} {
		resp := send(m.method, m.path, "", "")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != m.allow || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s %s: %d Allow %q %s", m.method, m.path, resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"))
		}
	}
	if resp := send("POST", "/api/v1/tenants", "text/plain", `{"name":"X"}`); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain body: %d", resp.StatusCode)
	}
	big := `{"name":"` + strings.Repeat("x", 2<<20) + `"}`
	if resp := send("POST", "/api/v1/tenants", "application/json", big); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("2 MiB body: %d", resp.StatusCode)
	}
	// The served document is the enforced one: this deployment's regions.
	res = c.do("GET", "/api/v1/openapi.json", "", nil, true)
	if res.status != 200 || !strings.Contains(string(res.body), `"enum":["us-east","eu-west"]`) {
		t.Fatalf("openapi.json: %d", res.status)
	}
}

// TestOversizedRecordIs413: a request the spec accepts (a body under the
// 1 MiB limit, each mapping within its caps) whose tenant record would
// exceed registry.MaxRecordBytes is a 413 problem saying how large, and the
// tenant is unchanged.
func TestOversizedRecordIs413(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c, tok := f.c, f.cfg.Admin.Token
	res := c.do("POST", "/api/v1/tenants", tok, map[string]any{"name": "Big", "tier": "standard", "webhook_url": "https://a.example/h"}, true)
	var tn tenantBody
	res.json(t, &tn)
	fields := map[string]string{}
	for i := 0; i < 256; i++ {
		fields[fmt.Sprintf("out.%s%d", strings.Repeat("n", 200), i)] = "data." + strings.Repeat("p", 240)
	}
	var eps []map[string]any
	for i := 0; i < 3; i++ {
		eps = append(eps, map[string]any{"url": fmt.Sprintf("https://a.example/m%d", i), "mapping": map[string]any{"version": 1, "fields": fields}})
	}
	r := c.do("PATCH", "/api/v1/tenants/"+tn.ID, tok, map[string]any{"endpoints": eps}, true)
	var p struct {
		Status int
		Detail string
	}
	r.json(t, &p)
	if r.status != http.StatusRequestEntityTooLarge || p.Status != 413 || !strings.Contains(p.Detail, "over the limit of 262144") {
		t.Fatalf("want a 413 problem naming the limit, got %d %s", r.status, r.body)
	}
	g := c.do("GET", "/api/v1/tenants/"+tn.ID, tok, nil, true)
	var after tenantBody
	g.json(t, &after)
	if after.Version != tn.Version {
		t.Fatalf("the refused change was written: version %d -> %d", tn.Version, after.Version)
	}
}
