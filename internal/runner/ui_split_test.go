package runner_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/runner"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// uiClient is a browser-like HTTP client of the web UI: its own cookies,
// the CSRF token of the last page, same-origin form posts.
type uiClient struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

var uiCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func newUIClient(t *testing.T, base string) *uiClient {
	jar, _ := cookiejar.New(nil)
	return &uiClient{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 60 * time.Second}}
}

func (u *uiClient) page(resp *http.Response, err error) (int, string) {
	u.t.Helper()
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := uiCSRF.FindSubmatch(b); m != nil {
		u.csrf = string(m[1])
	}
	return resp.StatusCode, string(b)
}

func (u *uiClient) get(path string) (int, string) {
	u.t.Helper()
	return u.page(u.c.Get(u.base + path))
}

func (u *uiClient) post(path string, form url.Values) (int, string) {
	u.t.Helper()
	form.Set("csrf", u.csrf)
	req, _ := http.NewRequest(http.MethodPost, u.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", u.base)
	return u.page(u.c.Do(req))
}

func (u *uiClient) eventually(path, want string) string {
	u.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, body := u.get(path)
		if strings.Contains(body, want) {
			return body
		}
		if time.Now().After(deadline) {
			if i := strings.Index(body, "<main"); i > 0 {
				body = body[i:]
			}
			u.t.Fatalf("%s never showed %q:\n%.3000s", path, want, body)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestUIOnSplitDeployment runs `partners webhooks` and `partners
// control-plane` as two processes (in-process runners) with the control
// plane's UI reading the DLQ through the webhooks process's admin API
// (ui.webhooks_api): the console lists a dead letter of the webhooks
// process, the partner replays one by a filter (exactly it) and recovers
// its endpoint since a time, and both are delivered.
func TestUIOnSplitDeployment(t *testing.T) {
	var got, failing atomic.Int64
	failing.Store(1)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if failing.Load() == 1 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)

	cfg := testenv.Config(t)
	cfg.Kafka.Brokers = testenv.Brokers(t)
	// Five failures in a row would open the endpoint's breaker and hold
	// the second dead letter until its probe (30 s).
	cfg.Partner.Webhooks.Breaker.ConsecutiveFailures = 100
	wh := startWith(t, runner.Webhooks, cfg)
	cpCfg := *cfg
	cpCfg.UI.WebhooksAPI = "http://" + wh.Addr(runner.ListenAdmin)
	cp := startWith(t, runner.ControlPlane, &cpCfg)
	base := "http://" + cp.Addr(runner.ListenAdmin)

	code, created := call(t, http.MethodPost, base+"/api/v1/tenants", cfg.Admin.Token, map[string]any{"name": "Split Partner", "tier": "standard",
		"webhook_url": recv.URL + "/hook"})
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("create tenant: %d %v", code, created)
	}
	tenantID, _ := created["id"].(string)
	apiKey, _ := created["api_key"].(string)

	k := kafka.Cluster{Config: cfg.Kafka, Brokers: cfg.Kafka.Brokers}
	prod, err := k.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	start := time.Now().UTC()
	produce := func(id, typ string) {
		b, _ := json.Marshal(schemas.Event{SchemaVersion: schemas.SchemaVersion, ID: id, Type: typ, Source: "shop", OccurredAt: time.Now().UTC(),
			TenantID: tenantID, Data: json.RawMessage(`{"order_id":"` + id + `","amount":120}`)})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: k.Topic(schemas.TopicEvents), Key: []byte(id), Value: b}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The webhooks process learns of the tenant from the tenants topic:
	// its test route answers the tenant's key once it has.
	testenv.Eventually(t, 30*time.Second, "the webhooks process knows the tenant", func() bool {
		code, _ := call(t, http.MethodPost, cpCfg.UI.WebhooksAPI+"/api/v1/partners/webhooks/test", apiKey, nil)
		return code != http.StatusUnauthorized && code != http.StatusForbidden
	})
	produce("evt-split-1", "order.completed")
	produce("evt-split-2", "order.refunded")

	op := newUIClient(t, base)
	op.get("/ui/login")
	if code, body := op.post("/ui/login/operator", url.Values{"admin_token": {cfg.Admin.Token}}); code != http.StatusOK || !strings.Contains(body, "Onboard a partner") {
		t.Fatalf("operator sign-in: %d", code)
	}
	op.eventually("/ui/console/dlq?tenant="+tenantID, "evt-split-2")
	op.eventually("/ui/console/dlq?tenant="+tenantID, "evt-split-1")

	p := newUIClient(t, base)
	p.get("/ui/login")
	if code, body := p.post("/ui/login/partner", url.Values{"api_key": {apiKey}}); code != http.StatusOK || !strings.Contains(body, "Split Partner") {
		t.Fatalf("partner sign-in: %d", code)
	}
	p.eventually("/ui/portal/dlq", "evt-split-2")
	body := p.eventually("/ui/portal/dlq", "evt-split-1")
	if n := strings.Count(body, `aria-label="Replay msg_`); n != 2 {
		t.Errorf("the portal offers %d Replay buttons for the 2 waiting dead letters of the webhooks process", n)
	}
	ep := regexp.MustCompile(`<option value="(ep_[0-9a-f]+)"`).FindStringSubmatch(body)
	if ep == nil {
		t.Fatalf("no endpoint on the DLQ page:\n%s", body)
	}
	failing.Store(0)
	if code, body := p.post("/ui/portal/dlq/replay", url.Values{"event_type": {"order.completed"}}); code != http.StatusOK ||
		!strings.Contains(body, "Replayed 1 dead letter") {
		t.Fatalf("replay through ui.webhooks_api: %d\n%.1500s", code, body)
	}
	testenv.Eventually(t, 60*time.Second, "the replayed delivery", func() bool { return got.Load() >= 1 })
	if code, body := p.post("/ui/portal/dlq/recover", url.Values{"endpoint": {ep[1]}, "since": {start.Add(-time.Minute).Format("2006-01-02T15:04")}}); code != http.StatusOK ||
		!strings.Contains(body, ": 1 failed deliveries") {
		t.Fatalf("recover through ui.webhooks_api: %d\n%.1500s", code, body)
	}
	testenv.Eventually(t, 60*time.Second, "the recovered delivery", func() bool { return got.Load() >= 2 })
	p.eventually("/ui/portal/dlq?status=delivered", "evt-split-2")
	if _, body := p.get("/ui/portal/dlq"); strings.Contains(body, "evt-split") {
		t.Errorf("dead letters still waiting after replay and recovery:\n%.1500s", body)
	}
}
