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

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/runner"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/web"
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
	// Not t.TempDir: Chromium's helper processes can still write to the
	// profile for a moment after the browser exited, and TempDir's
	// RemoveAll then fails the test ("directory not empty"). This cleanup
	// runs after the browser's (registered first, so it runs last) and
	// retries.
	profile, err := os.MkdirTemp("", "partners-browser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := os.RemoveAll(profile)
			if err == nil {
				return
			}
			if i == 20 {
				t.Logf("browser profile %s not removed: %v", profile, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
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
	// that Run: ctx itself, not a derived one with a timeout. Every
	// document of the tab records the Content-Security-Policy violations it
	// causes (the pages must cause none).
	if err := chromedp.Run(ctx, chromedp.ActionFunc(func(ctx context.Context) error {
		_, err := page.AddScriptToEvaluateOnNewDocument(cspRecorder).Do(ctx)
		return err
	})); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	return &user{t: t, name: name, ctx: ctx, base: base}
}

const cspRecorder = `window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));`

// cspViolations returns what the current document's CSP blocked.
func (u *user) cspViolations() []string {
	u.t.Helper()
	var v []string
	u.do("read CSP violations", chromedp.Evaluate(`window.__csp || []`, &v))
	return v
}

// noOverflow fails when the page scrolls sideways (phone width).
func (u *user) noOverflow(what string) {
	u.t.Helper()
	var scrollW, clientW int
	u.do("measure the page width", chromedp.Evaluate(`document.documentElement.scrollWidth`, &scrollW),
		chromedp.Evaluate(`document.documentElement.clientWidth`, &clientW))
	if scrollW > clientW+1 {
		// Name the elements that stick out (outside any sideways-scrolling box).
		var culprits []string
		u.do("find what sticks out", chromedp.Evaluate(`(() => {
		  const w = document.documentElement.clientWidth, out = [];
		  for (const e of document.querySelectorAll('body *')) {
		    const pos = getComputedStyle(e).position;
		    if (e.closest('.scroll') && !e.matches('.scroll') && pos !== 'absolute' && pos !== 'fixed') continue;
		    const r = e.getBoundingClientRect();
		    if (r.right > w + 1 && out.length < 6) out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + e.className + ' right=' + Math.round(r.right));
		  }
		  return out;
		})()`, &culprits))
		u.t.Errorf("%s: %s scrolls sideways at %d px: content %d px wide: %v", u.name, what, clientW, scrollW, culprits)
	}
}

// focusJS describes the focused element and whether its focus ring shows.
const focusJS = `(() => {
  const e = document.activeElement;
  if (!e || e === document.body) return {ring: false, what: 'nothing'};
  const cs = getComputedStyle(e);
  const ring = e.matches(':focus-visible') && cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2;
  return {ring: ring, what: e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ' ' + (e.getAttribute('href') || e.getAttribute('name') || e.textContent.trim().slice(0, 40))};
})()`

// tabTo presses Tab until sel has the focus (at most 60 times), checking at
// every stop that the focused element shows a visible focus ring.
func (u *user) tabTo(sel string) {
	u.t.Helper()
	for range 60 {
		var f struct {
			Ring bool   `json:"ring"`
			What string `json:"what"`
		}
		var at bool
		u.do("Tab toward "+sel, chromedp.KeyEvent(kb.Tab), chromedp.Evaluate(focusJS, &f),
			chromedp.Evaluate(fmt.Sprintf(`document.activeElement.matches(%q)`, sel), &at))
		if !f.Ring {
			u.t.Errorf("%s: keyboard focus on %s shows no focus ring", u.name, f.What)
		}
		if at {
			return
		}
	}
	u.t.Fatalf("%s: 60 Tabs never reached %s", u.name, sel)
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

// shots are the screenshots written, and shotPages the page templates
// they show (every template must be among them).
var (
	shots     []string
	shotPages = map[string]bool{}
)

func shotDir(t *testing.T) string {
	return filepath.Join(testenv.RepoRoot(t), ".local", "ui-screenshots")
}

// shot writes a full-page PNG of what the user sees to
// .local/ui-screenshots/NN-name.png, after checking the page broke no CSP
// rule.
func (u *user) shot(name string) {
	u.t.Helper()
	if v := u.cspViolations(); len(v) > 0 {
		u.t.Errorf("%s: page %s violates the Content-Security-Policy: %v", u.name, name, v)
	}
	var buf []byte
	var pg string
	u.do("screenshot "+name, chromedp.Evaluate(`document.body.dataset.page || ''`, &pg), chromedp.FullScreenshot(&buf, 100))
	dir := shotDir(u.t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		u.t.Fatal(err)
	}
	if !bytes.HasPrefix(buf, []byte("\x89PNG")) {
		u.t.Fatalf("screenshot %s is not a PNG", name)
	}
	file := fmt.Sprintf("%02d-%s.png", len(shots)+1, name)
	if err := os.WriteFile(filepath.Join(dir, file), buf, 0o644); err != nil {
		u.t.Fatal(err)
	}
	shots = append(shots, file)
	shotPages[pg] = true
}

// eventually reloads path until the page's text contains want.
func (u *user) eventually(path, want string, timeout time.Duration) string {
	u.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		u.open(path)
		// Read without failing: a read can lose the document it started
		// on ("No node with given id found", CI) and then simply goes
		// round again.
		var b string
		ctx, cancel := context.WithTimeout(u.ctx, 10*time.Second)
		err := chromedp.Run(ctx, chromedp.Text("body", &b, chromedp.ByQuery))
		cancel()
		if err == nil && strings.Contains(b, want) {
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

// formTime is the value format of a datetime-local input (UTC here).
const formTime = "2006-01-02T15:04"

// TestBrowser: an operator onboards a partner and issues a portal link
// that works once; the partner sees its deliveries (filtered by status,
// event type and time) and their attempts, a dead letter, replays it and
// sees it delivered, recovers an endpoint since a time, manages its
// endpoints and sees its ROI chart; a second partner cannot see or change
// any of it, even by editing URLs; a forged cross-origin form is refused;
// the operator searches, rotates, suspends and activates; a phone-width
// screen and a keyboard are enough; sessions expire.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser suite: not in -short")
	}
	root := browser(t)
	if old, _ := filepath.Glob(filepath.Join(shotDir(t), "*.png")); len(old) > 0 {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}
	t.Run("sessions expire", func(t *testing.T) { testSessionExpiry(t, root) })
	if t.Failed() {
		return
	}
	testStart := time.Now().UTC()
	// phase times each part of the suite (printed at the end: where its
	// time goes; no assertion on them).
	var phases []string
	phaseName, phaseAt := "start dev", time.Now()
	phase := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %.1fs", phaseName, time.Since(phaseAt).Seconds()))
		phaseName, phaseAt = name, time.Now()
	}
	sys := startDev(t)
	cfg := sys.cfg.Config
	recv := newReceiver(t)

	// --- the operator onboards partner A and issues a portal link ------------
	phase("onboarding")
	op := newUser(t, root, "operator", sys.base)
	op.open("/ui/")
	if !strings.HasSuffix(op.location(), "/ui/login") {
		t.Fatalf("signed out, /ui/ went to %s", op.location())
	}
	op.shot("sign-in")
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
	op.shot("console-tenants")
	op.click("#onboard")
	keyA := op.text("#secret-value")
	secretA := op.text("#webhook-secret")
	if !strings.HasPrefix(keyA, "pk_std_") || !strings.HasPrefix(secretA, "whsec_") {
		t.Fatalf("onboarding showed key %q and secret %q", keyA, secretA)
	}
	op.shot("console-onboarded")
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
	op.shot("console-tenant")
	op.click("#portal-link")
	link := op.text("#secret-value")
	if !strings.Contains(link, "/ui/link/") {
		t.Fatalf("portal link %q", link)
	}
	op.shot("console-portal-link")

	// --- the link works once ----------------------------------------------------
	phase("portal link")
	viaLink := newUser(t, root, "partner A (portal link)", sys.base)
	viaLink.do("open the link", chromedp.Navigate(link))
	viaLink.shot("portal-link")
	viaLink.click("#continue")
	if h := viaLink.text("h1"); h != "Acme Portal" {
		t.Fatalf("after the portal link: h1 %q at %s", h, viaLink.location())
	}
	again := newUser(t, root, "someone with the used link", sys.base)
	again.do("open the used link", chromedp.Navigate(link))
	if got := again.text("#link-error"); !strings.Contains(got, "already used or has expired") {
		t.Fatalf("a used portal link: %q", got)
	}
	again.open("/ui/login") // a page with this session's CSRF token, for a hand-made POST
	if st := again.post(strings.TrimPrefix(link, sys.base), nil); st != http.StatusGone {
		t.Errorf("redeeming a used portal link: %d, want 410", st)
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
	phase("deliveries")
	a := newUser(t, root, "partner A", sys.base)
	a.open("/ui/login")
	a.do("sign in with the API key", chromedp.SendKeys("#api_key", keyA, chromedp.ByQuery), chromedp.Submit("#api_key", chromedp.ByQuery),
		chromedp.WaitVisible("nav[aria-label=Portal]", chromedp.ByQuery))
	if c := a.html(); strings.Contains(c, keyA) {
		t.Fatal("a portal page contains the API key")
	}
	// The CSP holds in the browser: an inline script and an inline style
	// put into the page do not run.
	var blocked struct {
		Inline bool `json:"inline"`
		Styled bool `json:"styled"`
	}
	a.do("inject an inline script and style", chromedp.Evaluate(`(() => {
	  const s = document.createElement('script'); s.textContent = 'window.__inline = true'; document.head.appendChild(s);
	  const d = document.createElement('div'); d.setAttribute('style', 'width: 4321px'); document.body.appendChild(d);
	  const styled = d.getBoundingClientRect().width === 4321; d.remove();
	  return {inline: window.__inline === true, styled: styled};
	})()`, &blocked))
	if blocked.Inline || blocked.Styled {
		t.Errorf("the Content-Security-Policy let an inline script (%v) or style (%v) through", blocked.Inline, blocked.Styled)
	}
	sys.event(t, tenantA, "evt-ui-ok-1", "order.created")
	testenv.Eventually(t, 30*time.Second, "the first webhook", func() bool { return recv.got.Load() >= 1 })
	a.eventually("/ui/portal/deliveries?status=delivered", "order.created", 60*time.Second)
	recv.failing.Store(true)
	// Two dead letters at once: one to replay, one to recover.
	sys.event(t, tenantA, "evt-ui-fail-1", "order.completed")
	sys.event(t, tenantA, "evt-ui-fail-2", "order.refunded")
	sys.event(t, createdB.ID, "evt-ui-bravo-1", "order.created")
	a.eventually("/ui/portal/dlq", "evt-ui-fail-1", 60*time.Second)
	a.eventually("/ui/portal/dlq", "evt-ui-fail-2", 60*time.Second)
	a.shot("portal-dlq")
	body := a.eventually("/ui/portal/deliveries", "failed", 60*time.Second)
	if !strings.Contains(body, "delivered") || !strings.Contains(body, "order.completed") || strings.Contains(body, "evt-ui-bravo-1") {
		t.Fatalf("deliveries page:\n%s", body)
	}
	a.shot("portal-deliveries")
	a.navigating("filter to failed order.completed", chromedp.SetValue("#status", "failed", chromedp.ByQuery),
		chromedp.SetValue("#event_type", "order.completed", chromedp.ByQuery), chromedp.Submit("#status", chromedp.ByQuery),
		chromedp.WaitVisible("#deliveries", chromedp.ByQuery))
	rows := a.text("#deliveries tbody")
	if strings.Contains(rows, "delivered") || strings.Contains(rows, "order.created") || strings.Contains(rows, "order.refunded") || !strings.Contains(rows, "failed") {
		t.Fatalf("status=failed shows:\n%s", rows)
	}
	var failedID string
	a.do("read the failed delivery's id", chromedp.Text("#deliveries tbody tr td code", &failedID, chromedp.ByQuery))
	// The time filter: nothing from the future, nothing before the test,
	// both deliveries since the test began.
	a.open("/ui/portal/deliveries")
	a.navigating("filter from an hour ahead", chromedp.SetValue("#since", time.Now().UTC().Add(time.Hour).Format(formTime), chromedp.ByQuery),
		chromedp.Submit("#since", chromedp.ByQuery))
	if b := a.body(); !strings.Contains(b, "No deliveries match") || strings.Contains(b, failedID) {
		t.Errorf("deliveries from an hour ahead:\n%s", b)
	}
	a.open("/ui/portal/deliveries?until=" + testStart.Add(-time.Minute).Format(formTime))
	if b := a.body(); !strings.Contains(b, "No deliveries match") {
		t.Errorf("deliveries until before the test began:\n%s", b)
	}
	a.open("/ui/portal/deliveries?since=" + testStart.Add(-time.Minute).Format(formTime))
	if rows := a.text("#deliveries tbody"); !strings.Contains(rows, failedID) || !strings.Contains(rows, "delivered") {
		t.Errorf("deliveries since the test began:\n%s", rows)
	}
	a.open("/ui/portal/deliveries/" + failedID)
	att := a.text("#attempts tbody")
	var n int
	a.do("count the attempts", chromedp.Evaluate(`document.querySelectorAll('#attempts tbody tr').length`, &n))
	if n != cfg.Partner.Webhooks.Retry.MaxAttempts || strings.Count(att, "Service Unavailable") != n {
		t.Fatalf("attempts of %s: %d rows, want %d, each a 503:\n%s", failedID, n, cfg.Partner.Webhooks.Retry.MaxAttempts, att)
	}
	if !strings.Contains(att, "HTTP status") || !traceIDRe.MatchString(att) || !strings.Contains(att, " ms") || !strings.Contains(att, " UTC") {
		t.Fatalf("attempts lack time, error class, trace id or latency:\n%s", att)
	}
	a.shot("portal-delivery-attempts")

	// --- partner B cannot replay A's dead letter by naming it -------------------
	phase("B replays")
	bForm := newUser(t, root, "partner B (forms)", sys.base)
	bForm.open("/ui/login")
	bForm.do("sign in with B's key", chromedp.SendKeys("#api_key", createdB.APIKey, chromedp.ByQuery), chromedp.Submit("#api_key", chromedp.ByQuery),
		chromedp.WaitVisible("nav[aria-label=Portal]", chromedp.ByQuery))
	bForm.open("/ui/portal/dlq")
	bForm.post("/ui/portal/dlq/replay", map[string]string{"delivery_id": failedID, "tenant": tenantA})
	if st := bForm.post("/ui/portal/dlq/replay", map[string]string{"endpoint": endpointA}); st != http.StatusNotFound {
		t.Errorf("partner B replaying A's endpoint: %d, want 404", st)
	}

	// --- replay: the dead letter is delivered -----------------------------------
	phase("replay")
	recv.failing.Store(false)
	before := recv.got.Load()
	a.open("/ui/portal/dlq?event_type=order.completed")
	if b := a.body(); strings.Contains(b, "evt-ui-fail-2") {
		t.Fatalf("the DLQ filtered to order.completed shows the order.refunded dead letter:\n%s", b)
	}
	a.click("#replay-all")
	// Exactly one: the filter's, and B's replay above touched nothing of A's.
	if f := a.text(".flash"); !strings.Contains(f, "Replayed 1 dead letter") {
		t.Fatalf("replay: %q", f)
	}
	testenv.Eventually(t, 30*time.Second, "the replayed webhook", func() bool { return recv.got.Load() > before })
	a.eventually("/ui/portal/deliveries/"+failedID, "delivered", 60*time.Second)
	a.shot("portal-delivery-replayed")
	a.eventually("/ui/portal/dlq?status=delivered", failedID, 30*time.Second)
	a.shot("portal-dlq-after-replay")

	// --- recover since: the endpoint's failures since a time are delivered ------
	phase("recover")
	a.open("/ui/portal/dlq")
	if b := a.body(); !strings.Contains(b, "evt-ui-fail-2") || strings.Contains(b, "evt-ui-fail-1") {
		t.Fatalf("after the filtered replay the waiting dead letters are not just the order.refunded one:\n%s", b)
	}
	recoverFrom := testStart.Add(-time.Minute)
	before = recv.got.Load()
	a.do("fill the recovery form", chromedp.SetValue("#rec-endpoint", endpointA, chromedp.ByQuery),
		chromedp.SetValue("#rec-since", recoverFrom.Format(formTime), chromedp.ByQuery))
	a.click("form[action='/ui/portal/dlq/recover'] button")
	if f := a.text(".flash"); !strings.Contains(f, "Recovering "+endpointA) || !strings.Contains(f, ": 1 failed deliveries") {
		t.Fatalf("recover: %q", f)
	}
	testenv.Eventually(t, 30*time.Second, "the recovered webhook", func() bool { return recv.got.Load() > before })
	a.eventually("/ui/portal/dlq?status=delivered", "evt-ui-fail-2", 60*time.Second)
	a.shot("portal-dlq-recovered")
	a.open("/ui/portal/")
	if b := a.body(); !strings.Contains(b, "order.completed") {
		t.Errorf("the overview lacks the recent deliveries:\n%s", b)
	}
	a.shot("portal-overview")

	// --- ROI ----------------------------------------------------------------
	phase("ROI")
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
	a.shot("portal-roi")

	// --- endpoints: test event, rotation with overlap, add, edit, disable -------
	phase("endpoints")
	a.open("/ui/portal/endpoints")
	a.click("#send-test")
	if r := a.text(".results"); !strings.Contains(r, "delivered") {
		t.Fatalf("test event: %s", r)
	}
	a.shot("portal-endpoints")
	a.open("/ui/portal/endpoints/" + endpointA)
	a.click("form[action$='/rotate-secret'] button")
	newSecret := a.text("#secret-value")
	if !strings.HasPrefix(newSecret, "whsec_") || newSecret == secretA || !strings.Contains(a.body(), "Valid until") {
		t.Fatalf("rotation: %q", a.body())
	}
	a.shot("portal-secret-rotated")
	a.open("/ui/portal/endpoints/" + endpointA)
	if b := a.html(); strings.Contains(b, newSecret) || strings.Contains(b, secretA) {
		t.Fatal("the endpoint page shows a secret value after its rotation")
	}
	if rows := a.text("#secrets tbody"); strings.Count(rows, "sec_") != 2 || !strings.Contains(rows, "UTC") {
		t.Errorf("the endpoint page does not show the old secret's overlap:\n%s", rows)
	}
	a.shot("portal-endpoint")
	// Add: a filter that does not compile is refused, then a good one.
	a.open("/ui/portal/endpoints")
	a.do("fill the new endpoint", chromedp.SendKeys("#url", recv.srv.URL+"/hooks/acme2", chromedp.ByQuery),
		chromedp.Click(`input[name=event_types][value="order.created"]`, chromedp.ByQuery),
		chromedp.SendKeys("#filter", "data.amount >", chromedp.ByQuery))
	a.click("form[action='/ui/portal/endpoints'] button[type=submit]")
	if b := a.body(); !strings.Contains(b, "does not compile") {
		t.Fatalf("a filter that does not compile:\n%s", b)
	}
	a.open("/ui/portal/endpoints")
	a.do("fill the new endpoint", chromedp.SendKeys("#url", recv.srv.URL+"/hooks/acme2", chromedp.ByQuery),
		chromedp.Click(`input[name=event_types][value="order.created"]`, chromedp.ByQuery),
		chromedp.SendKeys("#filter", "event.data.amount > 100.0", chromedp.ByQuery))
	a.click("form[action='/ui/portal/endpoints'] button[type=submit]")
	if h, v := a.text("h1"), a.text("#secret-value"); h != "Endpoint added" || !strings.HasPrefix(v, "whsec_") {
		t.Fatalf("adding an endpoint: %q %q", h, v)
	}
	a.click("a[href^='/ui/portal/endpoints/ep_']")
	endpointA2 := strings.TrimPrefix(a.location(), sys.base+"/ui/portal/endpoints/")
	type endpointJSON struct {
		ID         string   `json:"id"`
		URL        string   `json:"url"`
		EventTypes []string `json:"event_types"`
		Filter     string   `json:"filter"`
		Disabled   bool     `json:"disabled"`
	}
	endpointOfA := func(id string) endpointJSON {
		var tj struct {
			Endpoints []endpointJSON `json:"endpoints"`
		}
		adminAPI(t, sys.base, cfg.Admin.Token, "GET", "/api/v1/tenants/"+tenantA, nil, &tj)
		for _, e := range tj.Endpoints {
			if e.ID == id {
				return e
			}
		}
		t.Fatalf("tenant A has no endpoint %s: %+v", id, tj.Endpoints)
		return endpointJSON{}
	}
	if e := endpointOfA(endpointA2); e.URL != recv.srv.URL+"/hooks/acme2" || strings.Join(e.EventTypes, ",") != "order.created" ||
		e.Filter != "event.data.amount > 100.0" || e.Disabled {
		t.Fatalf("the added endpoint: %+v", e)
	}
	// Edit URL, event types and filter.
	a.do("edit the endpoint", chromedp.Clear("#url", chromedp.ByQuery), chromedp.SendKeys("#url", recv.srv.URL+"/hooks/acme2b", chromedp.ByQuery),
		chromedp.Click(`input[name=event_types][value="order.created"]`, chromedp.ByQuery),
		chromedp.Click(`input[name=event_types][value="order.completed"]`, chromedp.ByQuery),
		chromedp.Clear("#filter", chromedp.ByQuery), chromedp.SendKeys("#filter", "event.data.amount > 50.0", chromedp.ByQuery))
	a.click("form[action='/ui/portal/endpoints/" + endpointA2 + "'] button[type=submit]")
	if f := a.text(".flash"); !strings.Contains(f, "Endpoint saved") {
		t.Fatalf("save: %q", f)
	}
	if e := endpointOfA(endpointA2); e.URL != recv.srv.URL+"/hooks/acme2b" || strings.Join(e.EventTypes, ",") != "order.completed" ||
		e.Filter != "event.data.amount > 50.0" {
		t.Fatalf("the edited endpoint: %+v", e)
	}
	a.click("form[action$='/disable'] button")
	if f := a.text(".flash"); !strings.Contains(f, "disabled") || !endpointOfA(endpointA2).Disabled {
		t.Fatalf("disable: %q %+v", f, endpointOfA(endpointA2))
	}
	a.shot("portal-endpoint-disabled")
	a.click("form[action$='/enable'] button")
	if f := a.text(".flash"); !strings.Contains(f, "enabled") || endpointOfA(endpointA2).Disabled {
		t.Fatalf("enable: %q %+v", f, endpointOfA(endpointA2))
	}

	// --- a forged form on another origin is refused -----------------------------
	phase("forged form")
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>prize</title><form method="post" action="%s/ui/portal/endpoints/%s/disable">`+
			`<input type="hidden" name="csrf" value="guessed"><button id="go">Claim your prize</button></form>`, sys.base, endpointA)
	}))
	t.Cleanup(evil.Close)
	a.do("visit another site", chromedp.Navigate(evil.URL))
	a.click("#go")
	if h := a.text("h1"); h != "Request refused" {
		t.Errorf("a forged cross-origin form: h1 %q at %s", h, a.location())
	}
	if endpointOfA(endpointA).Disabled {
		t.Fatal("a forged cross-origin form disabled A's endpoint")
	}
	a.shot("forged-form-refused")

	// --- partner B sees none of A's data, by keyboard, at phone width ---------
	phase("partner B")
	b := newUser(t, root, "partner B", sys.base)
	b.do("phone width", emulation.SetDeviceMetricsOverride(390, 844, 2, true))
	b.open("/ui/login")
	b.noOverflow("the sign-in page")
	// Keyboard only: Tab to the key field (every stop shows its focus ring), type, Enter.
	b.tabTo("#api_key")
	b.navigating("sign in by keyboard", chromedp.KeyEvent(createdB.APIKey), chromedp.KeyEvent(kb.Enter))
	if h := b.text("h1"); h != "Bravo Portal" {
		t.Fatalf("keyboard sign-in of B: h1 %q", h)
	}
	b.noOverflow("the overview")
	// Add an endpoint by keyboard: nav link, URL, an event type, a filter, Enter.
	b.tabTo(`nav a[href="/ui/portal/endpoints"]`)
	b.navigating("open Endpoints by keyboard", chromedp.KeyEvent(kb.Enter))
	b.noOverflow("the endpoints page")
	b.tabTo("#url")
	b.do("type the URL", chromedp.KeyEvent(recvB.srv.URL+"/hooks/bravo2"))
	b.tabTo(`input[name=event_types][value="order.created"]`)
	b.do("tick order.created", chromedp.KeyEvent(" "))
	b.tabTo("#filter")
	b.navigating("type the filter and submit by keyboard", chromedp.KeyEvent(`event.type == "order.created"`), chromedp.KeyEvent(kb.Enter))
	secretB2 := b.text("#secret-value")
	if h := b.text("h1"); h != "Endpoint added" || !strings.HasPrefix(secretB2, "whsec_") {
		t.Fatalf("B adding an endpoint by keyboard: %q %q", h, secretB2)
	}
	b.noOverflow("the new secret")
	b.shot("phone-portal-endpoint-added")
	b.tabTo(`main a[href^="/ui/portal/endpoints/ep_"]`)
	b.navigating("open the new endpoint by keyboard", chromedp.KeyEvent(kb.Enter))
	var filter string
	var ticked bool
	b.do("read the form", chromedp.Value("#filter", &filter, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelector('input[name=event_types][value="order.created"]').checked`, &ticked))
	if filter != `event.type == "order.created"` || !ticked {
		t.Errorf("B's keyboard endpoint: filter %q, order.created ticked %v", filter, ticked)
	}
	if strings.Contains(b.html(), secretB2) {
		t.Error("the endpoint page shows the secret it was created with")
	}
	b.noOverflow("an endpoint")
	b.tabTo(`nav a[href="/ui/portal/deliveries"]`)
	b.navigating("open Deliveries by keyboard", chromedp.KeyEvent(kb.Enter))
	b.eventually("/ui/portal/deliveries", "evt-ui-bravo-1", 60*time.Second)
	b.noOverflow("the deliveries page")
	b.shot("phone-portal-deliveries")
	for _, p := range []string{"/ui/portal/", "/ui/portal/dlq", "/ui/portal/roi"} {
		b.open(p)
		b.noOverflow(p)
	}
	b.shot("phone-portal-roi")
	for _, p := range []string{"/ui/portal/deliveries", "/ui/portal/dlq", "/ui/portal/dlq?status=all", "/ui/portal/", "/ui/portal/endpoints", "/ui/portal/roi",
		"/ui/portal/deliveries?tenant=" + tenantA, "/ui/portal/dlq?tenant=" + tenantA, "/ui/portal/roi?partner=" + tenantA} {
		b.open(p)
		if h := b.html(); strings.Contains(h, tenantA) || strings.Contains(h, endpointA) || strings.Contains(h, endpointA2) ||
			strings.Contains(h, "evt-ui-fail-1") || strings.Contains(h, failedID) || strings.Contains(h, "Acme") {
			t.Errorf("partner B sees partner A's data at %s", p)
		}
	}
	for _, p := range []string{"/ui/portal/deliveries/" + failedID, "/ui/portal/endpoints/" + endpointA, "/ui/portal/endpoints/" + endpointA2,
		"/ui/portal/dlq?endpoint=" + endpointA} {
		b.open(p)
		if h := b.text("h1"); h != "Not found" {
			t.Errorf("partner B at %s: h1 %q, want Not found", p, h)
		}
	}
	b.noOverflow("the not-found page")
	b.shot("phone-not-found")
	b.open("/ui/portal/endpoints")
	for _, f := range []struct {
		path string
		form map[string]string
	}{
		{"/ui/portal/endpoints/" + endpointA + "/disable", nil},
		{"/ui/portal/endpoints/" + endpointA2 + "/enable", nil},
		{"/ui/portal/endpoints/" + endpointA + "/rotate-secret", nil},
		{"/ui/portal/endpoints/" + endpointA, map[string]string{"url": recvB.srv.URL + "/stolen"}},
		{"/ui/portal/dlq/recover", map[string]string{"endpoint": endpointA, "since": "2020-01-01T00:00"}},
	} {
		if st := b.post(f.path, f.form); st != http.StatusNotFound {
			t.Errorf("partner B posting to %s: %d, want 404", f.path, st)
		}
	}
	if e := endpointOfA(endpointA); e.Disabled || e.URL != recv.srv.URL+"/hooks/acme" {
		t.Errorf("A's endpoint after B's attempts: %+v", e)
	}
	// A form without the CSRF token is refused, whoever's cookie it carries.
	var st int
	b.do("post without a CSRF token", chromedp.Evaluate(`fetch('/ui/portal/test', {method: 'POST', redirect: 'manual'}).then(r => r.status)`, &st,
		func(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }))
	if st != http.StatusForbidden {
		t.Errorf("a form without its CSRF token: %d, want 403", st)
	}

	// --- the operator: search, DLQ, health, rotations, suspend, activate -------
	phase("console")
	op.open("/ui/console/")
	op.navigating("search acme", chromedp.SendKeys("#q", "acme", chromedp.ByQuery), chromedp.Submit("#q", chromedp.ByQuery))
	if rows := op.text("#tenants tbody"); !strings.Contains(rows, "Acme Portal") || strings.Contains(rows, "Bravo Portal") {
		t.Errorf("search acme:\n%s", rows)
	}
	op.open("/ui/console/?q=" + createdB.ID)
	if rows := op.text("#tenants tbody"); !strings.Contains(rows, "Bravo Portal") || strings.Contains(rows, "Acme Portal") {
		t.Errorf("search by B's id:\n%s", rows)
	}
	op.open("/ui/console/?q=acme&status=suspended")
	if bd := op.body(); !strings.Contains(bd, "No tenant matches") {
		t.Errorf("search acme among suspended tenants:\n%s", bd)
	}
	op.open("/ui/console/dlq?status=all")
	if bd := op.body(); !strings.Contains(bd, tenantA) || !strings.Contains(bd, "evt-ui-fail-2") {
		t.Errorf("the console DLQ lacks A's dead letters:\n%s", bd)
	}
	op.shot("console-dlq")
	op.open("/ui/console/dlq?status=all&tenant=" + createdB.ID)
	if bd := op.body(); strings.Contains(bd, "evt-ui-fail") {
		t.Errorf("the console DLQ filtered to B shows A's dead letters:\n%s", bd)
	}
	// Consumer lag is measured every 15 s: wait for the first figure.
	op.eventually("/ui/console/health", "Lag (records)", 45*time.Second)
	if l := op.text("#lag"); !strings.Contains(l, schemas.TopicEvents) {
		t.Errorf("health lacks the events topic's consumer lag: %s", l)
	}
	hb := op.text("#checks")
	for _, want := range []string{"kafka", "clickhouse", "tenant registry"} {
		if !strings.Contains(hb, want) {
			t.Errorf("health lacks %s: %s", want, hb)
		}
	}
	if strings.Contains(hb, "down") {
		t.Errorf("health shows a dependency down: %s", hb)
	}
	if x := op.text("#xds"); !strings.Contains(x, "us-east") || strings.Contains(x, "none yet") {
		t.Errorf("health lacks the xDS versions: %s", x)
	}
	if br := op.text("#breakers"); !strings.Contains(br, endpointA) || !strings.Contains(br, "closed") {
		t.Errorf("health lacks A's breaker: %s", br)
	}
	op.shot("console-health")
	// Rotate A's API key: the new one is shown once, the old one's overlap too.
	op.open("/ui/console/tenants/" + tenantA)
	op.click("form[action$='/rotate-key'] button")
	keyA2 := op.text("#secret-value")
	if !strings.HasPrefix(keyA2, "pk_std_") || keyA2 == keyA {
		t.Fatalf("key rotation showed %q", keyA2)
	}
	if ov := op.text("#overlap"); !strings.Contains(ov, apikey.DisplayPrefix(keyA)) || !strings.Contains(ov, "UTC") {
		t.Errorf("key rotation lacks the old key's overlap:\n%s", ov)
	}
	op.shot("console-key-rotated")
	op.open("/ui/console/tenants/" + tenantA)
	if bd := op.html(); strings.Contains(bd, keyA2) {
		t.Error("the tenant page shows the rotated key")
	}
	a.open("/ui/portal/")
	if h := a.text("h1"); h != "Acme Portal" {
		t.Errorf("during the overlap the old key's session ended: %q at %s", h, a.location())
	}
	a2 := newUser(t, root, "partner A (new key)", sys.base)
	a2.open("/ui/login")
	a2.do("sign in with the new key", chromedp.SendKeys("#api_key", keyA2, chromedp.ByQuery), chromedp.Submit("#api_key", chromedp.ByQuery),
		chromedp.WaitVisible("nav[aria-label=Portal]", chromedp.ByQuery))
	// Rotate A's webhook secrets from the console.
	op.click("form[action$='/rotate-secret'] button")
	secretA3 := op.text("#secret-value")
	if !strings.HasPrefix(secretA3, "whsec_") || secretA3 == newSecret {
		t.Errorf("console secret rotation showed %q", secretA3)
	}
	if ov := op.text("#overlap"); !strings.Contains(ov, endpointA) {
		t.Errorf("console secret rotation lacks the overlap of %s:\n%s", endpointA, ov)
	}
	op.open("/ui/console/tenants/" + tenantA)
	if strings.Contains(op.html(), secretA3) {
		t.Error("the tenant page shows the rotated webhook secret")
	}
	op.click("form[action$='/suspend'] button")
	for _, u := range []*user{a, a2, viaLink} {
		u.open("/ui/portal/deliveries")
		if !strings.HasSuffix(u.location(), "/ui/login") {
			t.Errorf("%s: a suspended partner's session still opens the portal: %s", u.name, u.location())
		}
	}
	op.shot("console-tenant-suspended")
	op.click("form[action$='/activate'] button")
	if f := op.text(".flash"); !strings.Contains(f, "active") {
		t.Errorf("activate: %q", f)
	}
	a2.open("/ui/login")
	a2.do("sign in after activation", chromedp.SendKeys("#api_key", keyA2, chromedp.ByQuery), chromedp.Submit("#api_key", chromedp.ByQuery),
		chromedp.WaitVisible("nav[aria-label=Portal]", chromedp.ByQuery))
	// Signing out ends the session on the server: the old cookie opens nothing.
	var oldCookie string
	a2.do("read the session cookie", chromedp.ActionFunc(func(ctx context.Context) error {
		cs, err := storage.GetCookies().Do(ctx)
		for _, c := range cs {
			if c.Name == "partners_ui" {
				oldCookie = c.Value
			}
		}
		return err
	}))
	a2.click("form.logout button")
	if !strings.HasSuffix(a2.location(), "/ui/login") {
		t.Errorf("after signing out: %s", a2.location())
	}
	req, _ := http.NewRequest(http.MethodGet, sys.base+"/ui/portal/", nil)
	req.AddCookie(&http.Cookie{Name: "partners_ui", Value: oldCookie})
	if resp, err := http.DefaultTransport.RoundTrip(req); err != nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Errorf("the signed-out session's cookie: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The console at phone width.
	op.do("phone width", emulation.SetDeviceMetricsOverride(390, 844, 2, true))
	for _, p := range []string{"/ui/console/", "/ui/console/tenants/" + tenantA, "/ui/console/dlq?status=all", "/ui/console/health"} {
		op.open(p)
		op.noOverflow(p)
	}
	op.shot("phone-console-health")

	phase("end")
	// Cookies: HttpOnly, SameSite=Strict, no credential in them; no
	// credential in the logs.
	var cookies []*network.Cookie
	a2.do("read cookies", chromedp.ActionFunc(func(ctx context.Context) error {
		var err error
		cookies, err = storage.GetCookies().Do(ctx)
		return err
	}))
	for _, c := range cookies {
		if c.Name == "partners_ui" && (!c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || strings.Contains(c.Value, keyA2)) {
			t.Errorf("session cookie %+v", c)
		}
	}
	logs := sys.logs.String()
	for name, s := range map[string]string{"admin token": cfg.Admin.Token, "API key": keyA, "rotated API key": keyA2, "B's API key": createdB.APIKey,
		"webhook secret": secretA, "rotated secret": newSecret, "console-rotated secret": secretA3, "B's second secret": secretB2, "portal link": link[strings.LastIndex(link, "/")+1:]} {
		if strings.Contains(logs, s) {
			t.Errorf("the %s reached the logs", name)
		}
	}
	if !strings.Contains(logs, "form refused") {
		t.Error("the forged form's refusal is not logged")
	}

	// Every page template was photographed.
	ents, err := os.ReadDir(filepath.Join(testenv.RepoRoot(t), "web", "templates"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".html")
		if name != "layout" && name != "partials" && !shotPages[name] {
			t.Errorf("no screenshot shows the %s page", name)
		}
	}
	t.Logf("browser suite: %d screenshots of %d pages in .local/ui-screenshots; %s", len(shots), len(shotPages), strings.Join(phases, ", "))
}

// testSessionExpiry signs a partner in to a UI configured with a short
// idle timeout: a page inside it works, the next after it is the sign-in
// page; the cookie lives no longer than the configured maximum age.
func testSessionExpiry(t *testing.T, root context.Context) {
	const pepper = "pepper-of-the-session-expiry-test"
	key := apikey.New("standard")
	ten := &schemas.Tenant{ID: "tn_sessionexpiry01", Name: "Expiry Partner", Tier: "standard", Status: schemas.StatusActive,
		Keys: []schemas.APIKey{{ID: "key_1", Hash: apikey.Hash(pepper, key), Prefix: apikey.DisplayPrefix(key)}}}
	const idle, maxAge = 2 * time.Second, time.Hour
	ui, err := web.New(web.Options{AdminToken: "admin-token-of-the-session-test", Pepper: pepper, Tenants: oneTenant{ten}, Admin: noAdmin{},
		EventTypes: []string{"order.created"}, SessionIdle: idle, SessionMax: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ui)
	t.Cleanup(srv.Close)
	u := newUser(t, root, "partner (short sessions)", srv.URL)
	signIn := func() {
		u.open("/ui/login")
		u.do("sign in", chromedp.SendKeys("#api_key", key, chromedp.ByQuery), chromedp.Submit("#api_key", chromedp.ByQuery),
			chromedp.WaitVisible("nav[aria-label=Portal]", chromedp.ByQuery))
	}
	signIn()
	signedIn := time.Now()
	var cookies []*network.Cookie
	u.do("read cookies", chromedp.ActionFunc(func(ctx context.Context) error {
		var err error
		cookies, err = storage.GetCookies().Do(ctx)
		return err
	}))
	for _, c := range cookies {
		if c.Name != "partners_ui" {
			continue
		}
		left := time.Until(time.Unix(int64(c.Expires), 0))
		if c.Session || left > maxAge+time.Minute || left < maxAge-time.Minute {
			t.Errorf("the session cookie lives %v (session cookie %v), want the configured maximum age %v", left, c.Session, maxAge)
		}
	}
	u.open("/ui/portal/endpoints")
	if time.Since(signedIn) < idle {
		if !strings.HasSuffix(u.location(), "/ui/portal/endpoints") {
			t.Fatalf("inside the idle timeout the session ended: %s", u.location())
		}
	}
	time.Sleep(idle + 500*time.Millisecond)
	u.open("/ui/portal/endpoints")
	if !strings.HasSuffix(u.location(), "/ui/login") {
		t.Fatalf("after %v idle (timeout %v) the portal still opens: %s", idle+500*time.Millisecond, idle, u.location())
	}
	// Signing in again works: the expiry ended that session, not the partner.
	signIn()
}

// oneTenant and noAdmin are the backends of the session-expiry UI.
type oneTenant struct{ t *schemas.Tenant }

func (o oneTenant) Get(id string) (*schemas.Tenant, bool) { return o.t, id == o.t.ID }
func (o oneTenant) List() []*schemas.Tenant               { return []*schemas.Tenant{o.t} }
func (o oneTenant) ByKeyHash(h string, _ time.Time) (*schemas.Tenant, bool) {
	return o.t, apikey.Equal(o.t.Keys[0].Hash, h)
}

type noAdmin struct{}

func (noAdmin) Create(context.Context, web.Onboard) (*web.Credentials, error) {
	return nil, web.ErrUnavailable
}
func (noAdmin) SaveEndpoint(context.Context, string, web.EndpointChange) (*schemas.Tenant, error) {
	return nil, web.ErrUnavailable
}
func (noAdmin) SetStatus(context.Context, string, string) (*schemas.Tenant, error) {
	return nil, web.ErrUnavailable
}
func (noAdmin) RotateKey(context.Context, string) (*schemas.Tenant, string, error) {
	return nil, "", web.ErrUnavailable
}
func (noAdmin) RotateSecret(context.Context, string, string) (*schemas.Tenant, string, error) {
	return nil, "", web.ErrUnavailable
}
