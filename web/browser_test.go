package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/storage"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/runner"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// The browser suite drives the UI of a real `partners dev` (in-process, on
// the test Kafka broker and ClickHouse) with Debian's Chromium through the
// DevTools protocol (chromedp): what a partner and an operator do, by
// clicking and typing, with a screenshot of every page under
// .local/ui-screenshots/.

// chromium finds the browser: PARTNERS_TEST_BROWSER (make test sets it,
// after installing Debian's chromium when missing; then a missing browser
// fails the suite) or chromium on PATH; without either the suite is skipped.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PARTNERS_TEST_BROWSER"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("PARTNERS_TEST_BROWSER=%s: %v", p, err)
		}
		return p
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skip("no chromium on PATH and PARTNERS_TEST_BROWSER unset (make test installs Debian's chromium)")
	return ""
}

// browser starts headless Chromium with a fresh profile. The flags keep it
// from reaching for the network (closed here: without them it stalls on
// start-up fetches).
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	root, cancelRoot := chromedp.NewContext(alloc)
	t.Cleanup(cancelRoot)
	// The first Run starts the browser, which lives as long as that Run's
	// context: root itself.
	if err := chromedp.Run(root); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return root
}

// user is one person at one browser profile (own cookies).
type user struct {
	t    *testing.T
	name string
	ctx  context.Context
	base string
}

func newUser(t *testing.T, root context.Context, name, base string) *user {
	// Each user gets a browser context of its own (cookies and storage
	// apart, like another profile), in a window of its own: headless
	// Chromium opens no tab in a new context without one.
	bctx := cdp.WithExecutor(root, chromedp.FromContext(root).Browser)
	bc, err := target.CreateBrowserContext().WithDisposeOnDetach(true).Do(bctx)
	var tid target.ID
	if err == nil {
		tid, err = target.CreateTarget("about:blank").WithBrowserContextID(bc).WithNewWindow(true).Do(bctx)
	}
	if err != nil {
		t.Fatalf("%s: new browser context: %v", name, err)
	}
	ctx, cancel := chromedp.NewContext(root, chromedp.WithTargetID(tid))
	t.Cleanup(cancel)
	// Confirmation dialogs (replay, suspend) are accepted, as a user would.
	chromedp.ListenTarget(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go func() { _ = chromedp.Run(ctx, page.HandleJavaScriptDialog(true)) }()
		}
	})
	// The first Run creates the tab, which lives as long as the context of
	// that Run: ctx itself, not a derived one with a timeout.
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	return &user{t: t, name: name, ctx: ctx, base: base}
}

func (u *user) do(what string, actions ...chromedp.Action) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		var url, body string
		c2, cancel2 := context.WithTimeout(u.ctx, 5*time.Second)
		_ = chromedp.Run(c2, chromedp.Location(&url), chromedp.Text("body", &body, chromedp.ByQuery))
		cancel2()
		u.t.Fatalf("%s: %s: %v\nat %s:\n%.1500s", u.name, what, err, url, body)
	}
}

func (u *user) open(path string) { u.t.Helper(); u.do("open "+path, chromedp.Navigate(u.base+path)) }

func (u *user) text(sel string) string {
	u.t.Helper()
	var s string
	u.do("read "+sel, chromedp.WaitVisible(sel, chromedp.ByQuery), chromedp.Text(sel, &s, chromedp.ByQuery))
	return strings.TrimSpace(s)
}

func (u *user) body() string {
	u.t.Helper()
	var s string
	u.do("read the page", chromedp.Text("body", &s, chromedp.ByQuery))
	return s
}

func (u *user) html() string {
	u.t.Helper()
	var s string
	u.do("read the page's HTML", chromedp.OuterHTML("html", &s, chromedp.ByQuery))
	return s
}

func (u *user) location() string {
	u.t.Helper()
	var s string
	u.do("read the location", chromedp.Location(&s))
	return s
}

// navigating runs actions that load another page and waits until it has:
// a mark set on the old page's window is gone and the new one is loaded.
func (u *user) navigating(what string, actions ...chromedp.Action) {
	u.t.Helper()
	u.do(what, append([]chromedp.Action{chromedp.Evaluate(`window.__old = true`, nil)}, actions...)...)
	deadline := time.Now().Add(45 * time.Second)
	for {
		var loaded bool
		ctx, cancel := context.WithTimeout(u.ctx, 5*time.Second)
		err := chromedp.Run(ctx, chromedp.Evaluate(`!window.__old && document.readyState === 'complete'`, &loaded))
		cancel()
		if err == nil && loaded {
			return
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("%s: %s: the next page never loaded (%v)", u.name, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// click clicks a button or link and waits for the next page.
func (u *user) click(sel string) {
	u.t.Helper()
	u.navigating("click "+sel, chromedp.WaitVisible(sel, chromedp.ByQuery), chromedp.Click(sel, chromedp.ByQuery))
}

var shots = map[string]bool{}

// shot writes a full-page PNG of what the user sees to .local/ui-screenshots.
func (u *user) shot(name string) {
	u.t.Helper()
	var buf []byte
	u.do("screenshot "+name, chromedp.FullScreenshot(&buf, 100))
	dir := filepath.Join(testenv.RepoRoot(u.t), ".local", "ui-screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		u.t.Fatal(err)
	}
	if !bytes.HasPrefix(buf, []byte("\x89PNG")) {
		u.t.Fatalf("screenshot %s is not a PNG", name)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
		u.t.Fatal(err)
	}
	shots[name] = true
}

// eventually reloads path until the page's text contains want.
func (u *user) eventually(path, want string, timeout time.Duration) string {
	u.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		u.open(path)
		b := u.body()
		if strings.Contains(b, want) {
			return b
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("%s: %s never showed %q; last:\n%.2000s", u.name, path, want, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// post sends a form from inside the user's page (its cookie, its CSRF
// token): what a hand-edited form or URL would send. It returns the status.
func (u *user) post(path string, form map[string]string) int {
	u.t.Helper()
	b, _ := json.Marshal(form)
	js := fmt.Sprintf(`(async () => {
	  const f = new URLSearchParams(%s);
	  const c = document.querySelector('input[name=csrf]');
	  if (c) f.set('csrf', c.value);
	  const r = await fetch(%q, {method: 'POST', body: f, redirect: 'manual'});
	  return r.status;
	})()`, b, path)
	var status int
	u.do("post "+path, chromedp.Evaluate(js, &status, func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	return status
}

// receiver is a partner's webhook endpoint; it answers 503 while failing.
type receiver struct {
	srv     *httptest.Server
	failing atomic.Bool
	got     atomic.Int64
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		if r.failing.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		r.got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// adminAPI calls the admin API of the running system.
func adminAPI(t *testing.T, base, token, method, path string, body any, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
}

type system struct {
	cfg  *runner.Options
	base string
	prod *kgo.Client
	k    kafka.Cluster
	logs *testenv.LogBuffer
}

// startDev runs `partners dev` in-process on the test servers.
func startDev(t *testing.T) *system {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.Kafka.Brokers = testenv.Brokers(t)
	// The partner's outage here is a few seconds: keep its breaker closed,
	// so the replay is not held until the breaker's next probe (30 s).
	cfg.Partner.Webhooks.Breaker.ConsecutiveFailures = 100
	testenv.ClickHouse(t, cfg)
	logs := &testenv.LogBuffer{}
	tp := sdktrace.NewTracerProvider() // real trace ids, nothing exported
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	opt := runner.Options{Mode: runner.Dev, Config: cfg, Log: logs.Logger(t), TracerProvider: tp, Metrics: prometheus.NewRegistry(),
		ShutdownTimeout: 20 * time.Second}
	r, err := runner.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("dev failed to start: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("dev not ready after 90s")
	}
	k := kafka.Cluster{Config: cfg.Kafka, Brokers: cfg.Kafka.Brokers}
	prod, err := k.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prod.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dev did not stop cleanly: %v", err)
		}
	})
	return &system{cfg: &opt, base: "http://" + r.Addr(runner.ListenAdmin), prod: prod, k: k, logs: logs}
}

func (s *system) produce(t *testing.T, topic, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.prod.ProduceSync(ctx, &kgo.Record{Topic: s.k.Topic(topic), Key: []byte(key), Value: b}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func (s *system) event(t *testing.T, tenantID, id, typ string) {
	t.Helper()
	s.produce(t, schemas.TopicEvents, id, schemas.Event{SchemaVersion: schemas.SchemaVersion, ID: id, Type: typ, Source: "shop",
		OccurredAt: time.Now().UTC(), TenantID: tenantID, Data: json.RawMessage(`{"order_id":"` + id + `","amount":120}`)})
}

var traceIDRe = regexp.MustCompile(`\b[0-9a-f]{32}\b`)

// TestBrowser: an operator onboards a partner and issues a portal link
// that works once; the partner sees its deliveries and a dead letter,
// replays it and sees it delivered, and sees its ROI chart; a second
// partner cannot see any of it, even by editing URLs; a phone-width
// screen and a keyboard are enough.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser suite: not in -short")
	}
	root := browser(t)
	sys := startDev(t)
	cfg := sys.cfg.Config
	recv := newReceiver(t)

	// --- the operator onboards partner A and issues a portal link ------------
	op := newUser(t, root, "operator", sys.base)
	op.open("/ui/")
	if !strings.HasSuffix(op.location(), "/ui/login") {
		t.Fatalf("signed out, /ui/ went to %s", op.location())
	}
	op.shot("01-sign-in")
	op.navigating("type a wrong token", chromedp.SendKeys("#admin_token", "not-the-token", chromedp.ByQuery), chromedp.Submit("#admin_token", chromedp.ByQuery))
	if got := op.text("#login-error"); !strings.Contains(got, "not valid") {
		t.Fatalf("wrong admin token: %q", got)
	}
	op.do("sign in", chromedp.SendKeys("#admin_token", cfg.Admin.Token, chromedp.ByQuery), chromedp.Submit("#admin_token", chromedp.ByQuery),
		chromedp.WaitVisible("#onboard", chromedp.ByQuery))
	op.do("fill the onboarding form",
		chromedp.SendKeys("#name", "Acme Portal", chromedp.ByQuery),
		chromedp.SetValue("#tier", "standard", chromedp.ByQuery),
		chromedp.SendKeys("#webhook_url", recv.srv.URL+"/hooks/acme", chromedp.ByQuery))
	op.shot("02-console-tenants")
	op.click("#onboard")
	keyA := op.text("#secret-value")
	secretA := op.text("#webhook-secret")
	if !strings.HasPrefix(keyA, "pk_std_") || !strings.HasPrefix(secretA, "whsec_") {
		t.Fatalf("onboarding showed key %q and secret %q", keyA, secretA)
	}
	op.shot("03-console-onboarded")
	var tenants struct {
		Tenants []struct {
			ID        string `json:"id"`
			Name      string `json:"name"`
			Endpoints []struct {
				ID string `json:"id"`
			} `json:"endpoints"`
		} `json:"tenants"`
	}
	adminAPI(t, sys.base, cfg.Admin.Token, "GET", "/api/v1/tenants", nil, &tenants)
	var tenantA, endpointA string
	for _, x := range tenants.Tenants {
		if x.Name == "Acme Portal" {
			tenantA, endpointA = x.ID, x.Endpoints[0].ID
		}
	}
	if tenantA == "" {
		t.Fatalf("the onboarded tenant is not in the API: %+v", tenants)
	}
	op.click("a[href='/ui/console/tenants/" + tenantA + "']")
	if b := op.body(); strings.Contains(b, keyA) || strings.Contains(b, secretA) {
		t.Fatal("the tenant page shows the API key or webhook secret after onboarding")
	}
	op.shot("04-console-tenant")
	op.click("#portal-link")
	link := op.text("#secret-value")
	if !strings.Contains(link, "/ui/link/") {
		t.Fatalf("portal link %q", link)
	}
	op.shot("05-console-portal-link")

	// --- the link works once ----------------------------------------------------
	viaLink := newUser(t, root, "partner A (portal link)", sys.base)
	viaLink.do("open the link", chromedp.Navigate(link))
	viaLink.shot("06-portal-link")
	viaLink.click("#continue")
	if h := viaLink.text("h1"); h != "Acme Portal" {
		t.Fatalf("after the portal link: h1 %q at %s", h, viaLink.location())
	}
	again := newUser(t, root, "someone with the used link", sys.base)
	again.do("open the used link", chromedp.Navigate(link))
	if got := again.text("#link-error"); !strings.Contains(got, "already used or has expired") {
		t.Fatalf("a used portal link: %q", got)
	}
	again.open("/ui/portal/")
	if !strings.HasSuffix(again.location(), "/ui/login") {
		t.Fatalf("the used link signed in anyway: %s", again.location())
	}

	// --- partner B (onboarded through the API) -------------------------------
	recvB := newReceiver(t)
	var createdB struct {
		ID     string `json:"id"`
		APIKey string `json:"api_key"`
	}
	adminAPI(t, sys.base, cfg.Admin.Token, "POST", "/api/v1/tenants", map[string]any{"name": "Bravo Portal", "tier": "sandbox",
		"webhook_url": recvB.srv.URL + "/hooks/bravo"}, &createdB)
	if !strings.HasPrefix(createdB.ID, "tn_") || createdB.APIKey == "" {
		t.Fatalf("partner B: %+v", createdB)
	}

	// --- deliveries: one delivered, one dead-lettered ---------------------------
	a := newUser(t, root, "partner A", sys.base)
	a.open("/ui/login")
	a.do("sign in with the API key", chromedp.SendKeys("#api_key", keyA, chromedp.ByQuery), chromedp.Submit("#api_key", chromedp.ByQuery),
		chromedp.WaitVisible("nav[aria-label=Portal]", chromedp.ByQuery))
	if c := a.html(); strings.Contains(c, keyA) {
		t.Fatal("a portal page contains the API key")
	}
	sys.event(t, tenantA, "evt-ui-ok-1", "order.created")
	testenv.Eventually(t, 30*time.Second, "the first webhook", func() bool { return recv.got.Load() >= 1 })
	a.eventually("/ui/portal/deliveries?status=delivered", "order.created", 60*time.Second)
	recv.failing.Store(true)
	sys.event(t, tenantA, "evt-ui-fail-1", "order.completed")
	sys.event(t, createdB.ID, "evt-ui-bravo-1", "order.created")
	a.eventually("/ui/portal/dlq", "evt-ui-fail-1", 60*time.Second)
	a.shot("07-portal-dlq")
	body := a.eventually("/ui/portal/deliveries", "failed", 60*time.Second)
	if !strings.Contains(body, "delivered") || !strings.Contains(body, "order.completed") || strings.Contains(body, "evt-ui-bravo-1") {
		t.Fatalf("deliveries page:\n%s", body)
	}
	a.shot("08-portal-deliveries")
	a.navigating("filter to failed order.completed", chromedp.SetValue("#status", "failed", chromedp.ByQuery),
		chromedp.SetValue("#event_type", "order.completed", chromedp.ByQuery), chromedp.Submit("#status", chromedp.ByQuery),
		chromedp.WaitVisible("#deliveries", chromedp.ByQuery))
	rows := a.text("#deliveries tbody")
	if strings.Contains(rows, "delivered") || strings.Contains(rows, "order.created") || !strings.Contains(rows, "failed") {
		t.Fatalf("status=failed shows:\n%s", rows)
	}
	var failedID string
	a.do("read the failed delivery's id", chromedp.Text("#deliveries tbody tr td code", &failedID, chromedp.ByQuery))
	a.click("#deliveries tbody tr td a")
	att := a.text("#attempts tbody")
	var n int
	a.do("count the attempts", chromedp.Evaluate(`document.querySelectorAll('#attempts tbody tr').length`, &n))
	if n != cfg.Partner.Webhooks.Retry.MaxAttempts || strings.Count(att, "Service Unavailable") != n {
		t.Fatalf("attempts of %s: %d rows, want %d, each a 503:\n%s", failedID, n, cfg.Partner.Webhooks.Retry.MaxAttempts, att)
	}
	if !strings.Contains(att, "HTTP status") || !traceIDRe.MatchString(att) || !strings.Contains(att, " ms") {
		t.Fatalf("attempts lack error class, trace id or latency:\n%s", att)
	}
	a.shot("09-portal-delivery-attempts")

	// --- replay: the dead letter is delivered -----------------------------------
	recv.failing.Store(false)
	before := recv.got.Load()
	a.open("/ui/portal/dlq")
	a.click("#replay-all")
	if f := a.text(".flash"); !strings.Contains(f, "Replayed 1 dead letter") {
		t.Fatalf("replay: %q", f)
	}
	testenv.Eventually(t, 30*time.Second, "the replayed webhook", func() bool { return recv.got.Load() > before })
	a.eventually("/ui/portal/deliveries/"+failedID, "delivered", 60*time.Second)
	a.shot("10-portal-delivery-replayed")
	a.eventually("/ui/portal/dlq?status=delivered", failedID, 30*time.Second)
	a.shot("11-portal-dlq-after-replay")

	// --- ROI ----------------------------------------------------------------
	now := time.Now().UTC()
	for i, day := range []int{-3, -1} {
		at := now.AddDate(0, 0, day)
		user := fmt.Sprintf("u-ui-%d", i)
		sys.produce(t, schemas.TopicTouchpoints, user, schemas.Touchpoint{SchemaVersion: "1", ID: "tp-ui-" + user, UserID: user, PartnerID: tenantA,
			Source: schemas.SourceUTM, OccurredAt: at.Add(-time.Hour)})
		sys.produce(t, schemas.TopicCosts, tenantA, schemas.Cost{SchemaVersion: "1", ID: "cost-ui-" + user, PartnerID: tenantA,
			Amount: decimal.RequireFromString("40"), Currency: "USD", Category: "cpc", OccurredAt: at.Add(-2 * time.Hour)})
		sys.produce(t, schemas.TopicConversions, user, schemas.Conversion{SchemaVersion: "1", ID: "cv-ui-" + user, UserID: user,
			Kind: schemas.ConversionPurchase, Amount: decimal.RequireFromString("120"), Currency: "USD", NewCustomer: true, OccurredAt: at})
	}
	roiBody := a.eventually("/ui/portal/roi", "240.00", 60*time.Second)
	for _, want := range []string{"last_touch", "80.00", "CPL", "CAC", "LTV", "120.00", "40.00"} {
		if !strings.Contains(roiBody, want) {
			t.Fatalf("ROI page lacks %q:\n%s", want, roiBody)
		}
	}
	var lines int
	a.do("count the chart's lines", chromedp.Evaluate(`document.querySelectorAll('#roi-chart svg polyline').length`, &lines))
	if lines == 0 {
		t.Fatal("the ROI chart has no line")
	}
	a.shot("12-portal-roi")
	a.open("/ui/portal/endpoints")
	a.click("#send-test")
	if r := a.text(".results"); !strings.Contains(r, "delivered") {
		t.Fatalf("test event: %s", r)
	}
	a.shot("13-portal-endpoints")
	a.open("/ui/portal/endpoints/" + endpointA)
	a.click("form[action$='/rotate-secret'] button")
	newSecret := a.text("#secret-value")
	if !strings.HasPrefix(newSecret, "whsec_") || newSecret == secretA || !strings.Contains(a.body(), "Valid until") {
		t.Fatalf("rotation: %q", a.body())
	}
	a.shot("14-portal-secret-rotated")
	a.open("/ui/portal/endpoints/" + endpointA)
	if b := a.html(); strings.Contains(b, newSecret) || strings.Contains(b, secretA) {
		t.Fatal("the endpoint page shows a secret value after its rotation")
	}
	a.shot("15-portal-endpoint")

	// --- partner B sees none of A's data, by keyboard, at phone width ---------
	b := newUser(t, root, "partner B", sys.base)
	b.do("phone width", emulation.SetDeviceMetricsOverride(390, 844, 2, true))
	b.open("/ui/login")
	// Keyboard only: Tab to the skip link, then to the key field, type, Enter.
	b.do("sign in by keyboard", chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(kb.Tab),
		chromedp.KeyEvent(createdB.APIKey), chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible("nav[aria-label=Portal]", chromedp.ByQuery))
	if h := b.text("h1"); h != "Bravo Portal" {
		t.Fatalf("keyboard sign-in of B: h1 %q", h)
	}
	var scrollW, clientW int
	b.do("measure the page width", chromedp.Evaluate(`document.documentElement.scrollWidth`, &scrollW),
		chromedp.Evaluate(`document.documentElement.clientWidth`, &clientW))
	if scrollW > clientW+1 {
		t.Errorf("at phone width the page scrolls sideways: %d > %d", scrollW, clientW)
	}
	b.eventually("/ui/portal/deliveries", "evt-ui-bravo-1", 60*time.Second)
	b.shot("16-phone-portal-deliveries")
	for _, p := range []string{"/ui/portal/deliveries", "/ui/portal/dlq", "/ui/portal/", "/ui/portal/endpoints", "/ui/portal/roi",
		"/ui/portal/deliveries?tenant=" + tenantA, "/ui/portal/dlq?tenant=" + tenantA} {
		b.open(p)
		if h := b.html(); strings.Contains(h, tenantA) || strings.Contains(h, endpointA) || strings.Contains(h, "evt-ui-fail-1") || strings.Contains(h, failedID) {
			t.Errorf("partner B sees partner A's data at %s", p)
		}
	}
	for _, p := range []string{"/ui/portal/deliveries/" + failedID, "/ui/portal/endpoints/" + endpointA, "/ui/portal/dlq?endpoint=" + endpointA} {
		b.open(p)
		if h := b.text("h1"); h != "Not found" {
			t.Errorf("partner B at %s: h1 %q, want Not found", p, h)
		}
	}
	b.shot("17-phone-not-found")
	b.open("/ui/portal/endpoints")
	if st := b.post("/ui/portal/endpoints/"+endpointA+"/disable", nil); st != http.StatusNotFound {
		t.Errorf("partner B disabling A's endpoint: %d, want 404", st)
	}
	if st := b.post("/ui/portal/endpoints/"+endpointA+"/rotate-secret", nil); st != http.StatusNotFound {
		t.Errorf("partner B rotating A's secret: %d, want 404", st)
	}
	if st := b.post("/ui/portal/dlq/recover", map[string]string{"endpoint": endpointA, "since": "2020-01-01T00:00"}); st != http.StatusNotFound {
		t.Errorf("partner B recovering A's endpoint: %d, want 404", st)
	}
	var tA struct {
		Endpoints []struct {
			ID       string `json:"id"`
			Disabled bool   `json:"disabled"`
		} `json:"endpoints"`
	}
	adminAPI(t, sys.base, cfg.Admin.Token, "GET", "/api/v1/tenants/"+tenantA, nil, &tA)
	if len(tA.Endpoints) != 1 || tA.Endpoints[0].Disabled {
		t.Errorf("A's endpoint after B's attempts: %+v", tA.Endpoints)
	}
	// A form without the CSRF token is refused, whoever's cookie it carries.
	var st int
	b.do("post without a CSRF token", chromedp.Evaluate(`fetch('/ui/portal/test', {method: 'POST', redirect: 'manual'}).then(r => r.status)`, &st,
		func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if st != http.StatusForbidden {
		t.Errorf("a form without its CSRF token: %d, want 403", st)
	}

	// --- the operator's DLQ and health pages, then a suspension ----------------
	op.open("/ui/console/dlq?status=all")
	if bd := op.body(); !strings.Contains(bd, tenantA) {
		t.Errorf("the console DLQ lacks A's dead letter:\n%s", bd)
	}
	op.shot("18-console-dlq")
	op.open("/ui/console/health")
	hb := op.text("#checks")
	for _, want := range []string{"kafka", "clickhouse", "tenant registry"} {
		if !strings.Contains(hb, want) {
			t.Errorf("health lacks %s: %s", want, hb)
		}
	}
	if x := op.text("#xds"); !strings.Contains(x, "us-east") {
		t.Errorf("health lacks the xDS versions: %s", x)
	}
	if br := op.text("#breakers"); !strings.Contains(br, endpointA) {
		t.Errorf("health lacks A's breaker: %s", br)
	}
	op.shot("19-console-health")
	op.open("/ui/console/tenants/" + tenantA)
	op.click("form[action$='/suspend'] button")
	a.open("/ui/portal/deliveries")
	if !strings.HasSuffix(a.location(), "/ui/login") {
		t.Errorf("a suspended partner's session still opens the portal: %s", a.location())
	}
	viaLink.open("/ui/portal/")
	if !strings.HasSuffix(viaLink.location(), "/ui/login") {
		t.Errorf("a suspended partner's portal-link session still opens the portal: %s", viaLink.location())
	}

	// Cookies: HttpOnly, SameSite=Strict, no credential in them; no
	// credential in the logs.
	var cookies []*network.Cookie
	a.do("read cookies", chromedp.ActionFunc(func(ctx context.Context) error {
		var err error
		cookies, err = storage.GetCookies().Do(ctx)
		return err
	}))
	for _, c := range cookies {
		if c.Name == "partners_ui" && (!c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || strings.Contains(c.Value, keyA)) {
			t.Errorf("session cookie %+v", c)
		}
	}
	logs := sys.logs.String()
	for name, s := range map[string]string{"admin token": cfg.Admin.Token, "API key": keyA, "B's API key": createdB.APIKey,
		"webhook secret": secretA, "rotated secret": newSecret, "portal link": link[strings.LastIndex(link, "/")+1:]} {
		if strings.Contains(logs, s) {
			t.Errorf("the %s reached the logs", name)
		}
	}
	t.Logf("browser suite: %d pages photographed in .local/ui-screenshots", len(shots))
}
