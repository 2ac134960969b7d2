package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/processors/webhooks"
	"github.com/partners-engine/partners-engine/schemas"
)

// Fast tests of the UI's security against fake backends (no servers): the
// browser suite (browser_test.go) drives the real system.

const (
	testToken  = "admin-token-for-tests-0123"
	testPepper = "pepper-for-tests-0123456789"
)

type fakeTenants struct {
	mu sync.Mutex
	m  map[string]*schemas.Tenant
}

func (f *fakeTenants) Get(id string) (*schemas.Tenant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.m[id]
	return t, ok
}

func (f *fakeTenants) List() []*schemas.Tenant {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*schemas.Tenant
	for _, t := range f.m {
		out = append(out, t)
	}
	return out
}

func (f *fakeTenants) ByKeyHash(h string, now time.Time) (*schemas.Tenant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.m {
		for _, k := range t.Keys {
			if k.Hash == h && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt)) {
				return t, true
			}
		}
	}
	return nil, false
}

// fakeAdmin changes the fake tenants the way the writer would.
type fakeAdmin struct {
	tenants *fakeTenants
	calls   []string
	n       int
}

func (a *fakeAdmin) Create(_ context.Context, o Onboard) (*Credentials, error) {
	a.n++
	key := apikey.New("standard")
	t := &schemas.Tenant{ID: fmt.Sprintf("tn_new%d", a.n), Name: o.Name, Tier: o.Tier, Status: schemas.StatusActive,
		Keys:      []schemas.APIKey{{ID: "key_new", Hash: apikey.Hash(testPepper, key), Prefix: apikey.DisplayPrefix(key)}},
		Endpoints: []schemas.Endpoint{{ID: "ep_new", URL: o.WebhookURL, Secrets: []schemas.WebhookSecret{{ID: "sec_new", Secret: "whsec_new"}}}}}
	a.tenants.mu.Lock()
	a.tenants.m[t.ID] = t
	a.tenants.mu.Unlock()
	return &Credentials{Tenant: t, APIKey: key, WebhookSecret: "whsec_new"}, nil
}

func (a *fakeAdmin) SaveEndpoint(_ context.Context, id string, e EndpointChange) (*schemas.Tenant, error) {
	a.calls = append(a.calls, "save "+id+" "+e.ID+" "+e.Filter)
	t, _ := a.tenants.Get(id)
	return t, nil
}

func (a *fakeAdmin) SetStatus(_ context.Context, id, status string) (*schemas.Tenant, error) {
	a.calls = append(a.calls, status+" "+id)
	a.tenants.mu.Lock()
	defer a.tenants.mu.Unlock()
	t := *a.tenants.m[id]
	t.Status = status
	a.tenants.m[id] = &t
	return &t, nil
}

func (a *fakeAdmin) RotateKey(_ context.Context, id string) (*schemas.Tenant, string, error) {
	a.calls = append(a.calls, "rotate-key "+id)
	t, _ := a.tenants.Get(id)
	return t, "pk_std_rotatedrotatedrotated", nil
}

func (a *fakeAdmin) RotateSecret(_ context.Context, id, ep string) (*schemas.Tenant, string, error) {
	a.calls = append(a.calls, "rotate-secret "+id+" "+ep)
	t, _ := a.tenants.Get(id)
	return t, "whsec_rotated", nil
}

type fakeDLQ struct {
	items    []DeadLetter
	replays  []DLQQuery
	recovers []string
}

func (f *fakeDLQ) List(_ context.Context, q DLQQuery) ([]DeadLetter, string, error) {
	var out []DeadLetter
	for _, d := range f.items {
		if q.TenantID == "" || d.TenantID == q.TenantID {
			out = append(out, d)
		}
	}
	return out, "", nil
}

func (f *fakeDLQ) Replay(_ context.Context, q DLQQuery) (int, error) {
	f.replays = append(f.replays, q)
	return 1, nil
}

func (f *fakeDLQ) Recover(_ context.Context, tenantID, endpointID string, _ time.Time) (int, error) {
	f.recovers = append(f.recovers, tenantID+" "+endpointID)
	return 0, nil
}

// fakeTester and fakeROI record whose data they were asked for.
type fakeTester struct{ tenants []string }

func (f *fakeTester) Test(_ context.Context, t *schemas.Tenant) ([]TestResult, error) {
	f.tenants = append(f.tenants, t.ID)
	return []TestResult{{EndpointID: t.Endpoints[0].ID, Outcome: "delivered", StatusCode: 204}}, nil
}

type fakeROI struct{ partners []string }

func (f *fakeROI) Report(_ context.Context, partnerID string, days int) (*ROIReport, error) {
	f.partners = append(f.partners, partnerID)
	to := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	return &ROIReport{From: to.AddDate(0, 0, 1-days), To: to}, nil
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	srv     *httptest.Server
	ui      *Server
	tenants *fakeTenants
	admin   *fakeAdmin
	dlq     *fakeDLQ
	tester  *fakeTester
	roi     *fakeROI
	clock   *clock
	keyA    string
	keyB    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{tenants: &fakeTenants{m: map[string]*schemas.Tenant{}}, clock: &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}}
	f.keyA, f.keyB = apikey.New("standard"), apikey.New("sandbox")
	for _, x := range []struct{ id, name, key, ep string }{{"tn_aaaaaaaaaaaaaaaa", "Alpha", f.keyA, "ep_alpha"}, {"tn_bbbbbbbbbbbbbbbb", "Beta", f.keyB, "ep_beta"}} {
		f.tenants.m[x.id] = &schemas.Tenant{ID: x.id, Name: x.name, Tier: "standard", Status: schemas.StatusActive,
			Keys:      []schemas.APIKey{{ID: "key_" + x.name, Hash: apikey.Hash(testPepper, x.key), Prefix: apikey.DisplayPrefix(x.key)}},
			Endpoints: []schemas.Endpoint{{ID: x.ep, URL: "https://" + x.name + ".example/hook", Secrets: []schemas.WebhookSecret{{ID: "sec_" + x.name, Secret: "whsec_" + x.name + "SECRET"}}}}}
	}
	f.admin = &fakeAdmin{tenants: f.tenants}
	f.dlq = &fakeDLQ{items: []DeadLetter{{DeliveryID: "msg_alpha1", TenantID: "tn_aaaaaaaaaaaaaaaa", EndpointID: "ep_alpha", EventType: "order.created", Reason: "attempts exhausted", Replayable: true}}}
	f.tester, f.roi = &fakeTester{}, &fakeROI{}
	ui, err := New(Options{AdminToken: testToken, Pepper: testPepper, Tenants: f.tenants, Admin: f.admin, DLQ: f.dlq, Tester: f.tester, ROI: f.roi,
		EventTypes: []string{"order.created"}, SessionIdle: 10 * time.Minute, SessionMax: time.Hour, LinkTTL: 5 * time.Minute, Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	f.ui = ui
	f.srv = httptest.NewServer(ui)
	t.Cleanup(f.srv.Close)
	return f
}

// browser is a client with its own cookie jar that follows redirects.
type browser struct {
	t   *testing.T
	f   *fixture
	c   *http.Client
	jar *cookiejar.Jar
}

func (f *fixture) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, f: f, jar: jar, c: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) get(path string) (int, string, *http.Response) {
	b.t.Helper()
	resp, err := b.c.Get(b.f.srv.URL + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp
}

// csrf reads the CSRF token of a page.
func (b *browser) csrf(path string) string {
	b.t.Helper()
	_, body, _ := b.get(path)
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("no CSRF token on %s:\n%s", path, body)
	}
	return m[1]
}

func (b *browser) post(path string, form url.Values, origin string) (int, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) signInPartner(key string) string {
	b.t.Helper()
	tok := b.csrf("/ui/login")
	code, body := b.post("/ui/login/partner", url.Values{"csrf": {tok}, "api_key": {key}}, b.f.srv.URL)
	if code != http.StatusOK || !strings.Contains(body, "Overview") {
		b.t.Fatalf("partner sign-in: %d\n%s", code, body)
	}
	return body
}

func (b *browser) signInOperator() {
	b.t.Helper()
	tok := b.csrf("/ui/login")
	code, body := b.post("/ui/login/operator", url.Values{"csrf": {tok}, "admin_token": {testToken}}, b.f.srv.URL)
	if code != http.StatusOK || !strings.Contains(body, "Onboard a partner") {
		b.t.Fatalf("operator sign-in: %d\n%s", code, body)
	}
}

func TestSignInAndCookie(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signInPartner(f.keyA)
	u, _ := url.Parse(f.srv.URL + "/ui/")
	cs := b.jar.Cookies(u)
	if len(cs) != 1 || cs[0].Name != cookieName || strings.Contains(cs[0].Value, f.keyA) || len(cs[0].Value) < 40 {
		t.Fatalf("cookies %+v", cs)
	}
	// The jar does not show attributes: read them from a fresh sign-in.
	tok := b.csrf("/ui/login")
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/ui/login/operator", strings.NewReader(url.Values{"csrf": {tok}, "admin_token": {testToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range cs {
		req.AddCookie(c)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/ui/"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	if strings.Contains(sc, "Secure") {
		t.Errorf("plain HTTP without secure_cookies set a Secure cookie: %q", sc)
	}
	if strings.Contains(sc, testToken) {
		t.Error("the admin token is in the cookie")
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	for _, p := range []string{"/ui/login", "/ui/static/app.css", "/ui/nope"} {
		_, _, resp := b.get(p)
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			!strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("%s: headers %v", p, resp.Header)
		}
	}
	_, body, resp := b.get("/ui/login")
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("pages must not be cached: %q", resp.Header.Get("Cache-Control"))
	}
	// No inline script or style anywhere: the CSP would block it.
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") || strings.Contains(body, "onclick") {
		t.Errorf("inline script or style on the sign-in page")
	}
}

func TestCSRFAndOrigin(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signInPartner(f.keyA)
	good := b.csrf("/ui/portal/endpoints")
	for name, tc := range map[string]struct {
		form   url.Values
		origin string
	}{
		"no token":     {url.Values{"url": {"https://x.example"}}, ""},
		"wrong token":  {url.Values{"csrf": {"AAAA" + good[4:]}, "url": {"https://x.example"}}, ""},
		"cross origin": {url.Values{"csrf": {good}, "url": {"https://x.example"}}, "https://evil.example"},
	} {
		if code, _ := b.post("/ui/portal/endpoints", tc.form, tc.origin); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
	}
	if len(f.admin.calls) != 0 {
		t.Fatalf("a refused form changed something: %v", f.admin.calls)
	}
	// Another session's token does not work either.
	other := f.browser(t)
	other.signInPartner(f.keyA)
	if code, _ := other.post("/ui/portal/endpoints", url.Values{"csrf": {good}, "url": {"https://x.example"}}, ""); code != http.StatusForbidden {
		t.Errorf("another session's token: %d", code)
	}
	if code, _ := b.post("/ui/portal/endpoints", url.Values{"csrf": {good}, "url": {"https://x.example"}}, f.srv.URL); code != http.StatusOK {
		t.Errorf("the right token: %d", code)
	}
}

func TestSessionsExpire(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signInPartner(f.keyA)
	f.clock.add(9 * time.Minute)
	if _, body, _ := b.get("/ui/portal/"); !strings.Contains(body, "Alpha") {
		t.Fatal("a session used within the idle timeout ended")
	}
	f.clock.add(11 * time.Minute) // idle 11m > 10m
	if _, body, resp := b.get("/ui/portal/"); !strings.HasSuffix(resp.Request.URL.Path, "/ui/login") || strings.Contains(body, "Alpha") {
		t.Fatal("an idle session still opens the portal")
	}
	// The maximum age holds even for a busy session.
	b.signInPartner(f.keyA)
	for range 7 {
		f.clock.add(9 * time.Minute)
		b.get("/ui/portal/")
	}
	if _, _, resp := b.get("/ui/portal/"); !strings.HasSuffix(resp.Request.URL.Path, "/ui/login") {
		t.Fatal("a session older than session_max_age still opens the portal")
	}
}

func TestSessionEndsWithKeyAndSuspension(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signInPartner(f.keyA)
	// The key it signed in with expires (rotated, overlap over): the session ends.
	exp := f.clock.now().Add(time.Minute)
	f.tenants.mu.Lock()
	ta := *f.tenants.m["tn_aaaaaaaaaaaaaaaa"]
	ta.Keys = []schemas.APIKey{{ID: ta.Keys[0].ID, Hash: ta.Keys[0].Hash, ExpiresAt: &exp}}
	f.tenants.m[ta.ID] = &ta
	f.tenants.mu.Unlock()
	f.clock.add(2 * time.Minute)
	if _, _, resp := b.get("/ui/portal/"); !strings.HasSuffix(resp.Request.URL.Path, "/ui/login") {
		t.Fatal("a session outlived its API key")
	}
	// A suspended tenant's session ends at its next page.
	c := f.browser(t)
	c.signInPartner(f.keyB)
	op := f.browser(t)
	op.signInOperator()
	tok := op.csrf("/ui/console/tenants/tn_bbbbbbbbbbbbbbbb")
	if code, _ := op.post("/ui/console/tenants/tn_bbbbbbbbbbbbbbbb/suspend", url.Values{"csrf": {tok}}, ""); code != http.StatusOK {
		t.Fatalf("suspend: %d", code)
	}
	if _, _, resp := c.get("/ui/portal/"); !strings.HasSuffix(resp.Request.URL.Path, "/ui/login") {
		t.Fatal("a suspended tenant's session still opens the portal")
	}
	tok = c.csrf("/ui/login")
	if code, body := c.post("/ui/login/partner", url.Values{"csrf": {tok}, "api_key": {f.keyB}}, ""); code != http.StatusUnauthorized || !strings.Contains(body, "suspended") {
		t.Fatalf("a suspended tenant signs in: %d", code)
	}
}

// TestTenantIsolation: whatever a partner puts in the URL or the form, it
// reaches only its own tenant's data.
func TestTenantIsolation(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signInPartner(f.keyB)
	for _, p := range []string{"/ui/portal/endpoints/ep_alpha", "/ui/portal/deliveries/msg_alpha1", "/ui/portal/dlq?endpoint=ep_alpha"} {
		code, body, _ := b.get(p)
		// (no ClickHouse here: the delivery page answers 503, never A's data)
		if code != http.StatusNotFound && code != http.StatusServiceUnavailable || strings.Contains(body, "Alpha") || strings.Contains(body, "alpha.example") {
			t.Errorf("%s: %d", p, code)
		}
	}
	for _, p := range []string{"/ui/portal/dlq", "/ui/portal/dlq?tenant=tn_aaaaaaaaaaaaaaaa", "/ui/portal/endpoints", "/ui/portal/"} {
		if _, body, _ := b.get(p); strings.Contains(body, "msg_alpha1") || strings.Contains(body, "ep_alpha") {
			t.Errorf("%s shows partner A's data", p)
		}
	}
	tok := b.csrf("/ui/portal/endpoints")
	for _, p := range []string{"/ui/portal/endpoints/ep_alpha", "/ui/portal/endpoints/ep_alpha/disable", "/ui/portal/endpoints/ep_alpha/rotate-secret"} {
		if code, _ := b.post(p, url.Values{"csrf": {tok}, "url": {"https://evil.example"}}, ""); code != http.StatusNotFound {
			t.Errorf("POST %s: %d, want 404", p, code)
		}
	}
	if code, _ := b.post("/ui/portal/dlq/recover", url.Values{"csrf": {tok}, "endpoint": {"ep_alpha"}, "since": {"2025-01-01T00:00"}}, ""); code != http.StatusNotFound {
		t.Errorf("recover A's endpoint: %d", code)
	}
	// A replay from B's portal is B's, whatever the form says.
	b.post("/ui/portal/dlq/replay", url.Values{"csrf": {tok}, "tenant": {"tn_aaaaaaaaaaaaaaaa"}, "delivery_id": {"msg_alpha1"}}, "")
	if len(f.dlq.replays) != 1 || f.dlq.replays[0].TenantID != "tn_bbbbbbbbbbbbbbbb" {
		t.Errorf("replays %+v", f.dlq.replays)
	}
	if len(f.admin.calls) != 0 {
		t.Errorf("B changed something: %v", f.admin.calls)
	}
	// A partner session opens no console page.
	if _, _, resp := b.get("/ui/console/"); !strings.HasSuffix(resp.Request.URL.Path, "/ui/login") {
		t.Error("a partner session opens the console")
	}
}

func TestPortalLinkWorksOnce(t *testing.T) {
	f := newFixture(t)
	op := f.browser(t)
	op.signInOperator()
	tok := op.csrf("/ui/console/tenants/tn_aaaaaaaaaaaaaaaa")
	code, body := op.post("/ui/console/tenants/tn_aaaaaaaaaaaaaaaa/portal-link", url.Values{"csrf": {tok}}, "")
	m := regexp.MustCompile(`/ui/link/([A-Za-z0-9_-]+)`).FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("portal link: %d %s", code, body)
	}
	p := f.browser(t)
	// A GET (a mail scanner, a link preview) uses nothing.
	p.get("/ui/link/" + m[1])
	p.get("/ui/link/" + m[1])
	ltok := p.csrf("/ui/link/" + m[1])
	if code, body := p.post("/ui/link/"+m[1], url.Values{"csrf": {ltok}}, ""); code != http.StatusOK || !strings.Contains(body, "Alpha") {
		t.Fatalf("redeem: %d", code)
	}
	q := f.browser(t)
	if code, _, _ := q.get("/ui/link/" + m[1]); code != http.StatusGone {
		t.Errorf("a used link: %d, want 410", code)
	}
	ltok = q.csrf("/ui/login")
	if code, _ := q.post("/ui/link/"+m[1], url.Values{"csrf": {ltok}}, ""); code != http.StatusGone {
		t.Errorf("a used link redeemed again: %d", code)
	}
	// An unused link expires.
	tok = op.csrf("/ui/console/tenants/tn_aaaaaaaaaaaaaaaa")
	_, body = op.post("/ui/console/tenants/tn_aaaaaaaaaaaaaaaa/portal-link", url.Values{"csrf": {tok}}, "")
	m = regexp.MustCompile(`/ui/link/([A-Za-z0-9_-]+)`).FindStringSubmatch(body)
	f.clock.add(6 * time.Minute)
	r := f.browser(t)
	if code, _, _ := r.get("/ui/link/" + m[1]); code != http.StatusGone {
		t.Errorf("an expired link's page: %d, want 410", code)
	}
	ltok = r.csrf("/ui/login")
	if code, _ := r.post("/ui/link/"+m[1], url.Values{"csrf": {ltok}}, ""); code != http.StatusGone {
		t.Errorf("an expired link: %d, want 410", code)
	}
}

func TestSecretsShownOnce(t *testing.T) {
	f := newFixture(t)
	op := f.browser(t)
	op.signInOperator()
	tok := op.csrf("/ui/console/")
	code, body := op.post("/ui/console/tenants", url.Values{"csrf": {tok}, "name": {"Gamma"}, "tier": {"standard"}, "webhook_url": {"https://g.example/h"}}, "")
	key := regexp.MustCompile(`pk_std_[A-Za-z0-9_-]{43}`).FindString(body)
	if code != http.StatusOK || key == "" || !strings.Contains(body, "whsec_new") {
		t.Fatalf("onboarding: %d %s", code, body)
	}
	for _, p := range []string{"/ui/console/", "/ui/console/tenants/tn_new1"} {
		if _, b, _ := op.get(p); strings.Contains(b, key) || strings.Contains(b, "whsec_new") {
			t.Errorf("%s shows a credential after it was created", p)
		}
	}
	pb := f.browser(t)
	pb.signInPartner(f.keyA)
	if _, b, _ := pb.get("/ui/portal/endpoints/ep_alpha"); strings.Contains(b, "whsec_AlphaSECRET") {
		t.Error("the endpoint page shows the signing secret")
	}
}

func TestSignInThrottled(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	tok := b.csrf("/ui/login")
	var last int
	for range 12 {
		last, _ = b.post("/ui/login/operator", url.Values{"csrf": {tok}, "admin_token": {"guess"}}, "")
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("12 wrong tokens: last answer %d, want 429", last)
	}
	// Even the right token waits.
	if code, _ := b.post("/ui/login/operator", url.Values{"csrf": {tok}, "admin_token": {testToken}}, ""); code != http.StatusTooManyRequests {
		t.Fatalf("right token while throttled: %d", code)
	}
	f.clock.add(time.Minute)
	b.signInOperator()
}

func TestSessionTableBounded(t *testing.T) {
	s := newSessions(time.Minute, time.Hour, time.Now)
	for range maxSessions + 10 {
		s.create(kindAnon)
	}
	if n := s.len(); n > maxSessions {
		t.Fatalf("%d sessions kept, bound %d", n, maxSessions)
	}
}

// TestEveryPortalRouteIsolated walks every partner-scoped route of the
// mux (a new one without a case here fails the test) as partner B, with
// partner A's ids wherever the URL or the form can name one: B gets "not
// found" for A's objects, never A's data, and every backend call is for B.
func TestEveryPortalRouteIsolated(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signInPartner(f.keyB)
	tok := b.csrf("/ui/portal/endpoints")
	const tenantA, tenantB = "tn_aaaaaaaaaaaaaaaa", "tn_bbbbbbbbbbbbbbbb"
	type tc struct {
		path     string
		form     url.Values // nil: GET
		notFound bool
	}
	a := func(kv ...string) url.Values {
		v := url.Values{"tenant": {tenantA}, "tenant_id": {tenantA}}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	cases := map[string][]tc{
		"GET /ui/portal/{$}":                           {{path: "/ui/portal/?tenant=" + tenantA}},
		"GET /ui/portal/endpoints":                     {{path: "/ui/portal/endpoints?tenant=" + tenantA}},
		"POST /ui/portal/endpoints":                    {{path: "/ui/portal/endpoints", form: a("id", "ep_alpha", "url", "https://b.example/new")}},
		"GET /ui/portal/endpoints/{id}":                {{path: "/ui/portal/endpoints/ep_alpha", notFound: true}},
		"POST /ui/portal/endpoints/{id}":               {{path: "/ui/portal/endpoints/ep_alpha", form: a("url", "https://evil.example"), notFound: true}},
		"POST /ui/portal/endpoints/{id}/enable":        {{path: "/ui/portal/endpoints/ep_alpha/enable", form: a(), notFound: true}},
		"POST /ui/portal/endpoints/{id}/disable":       {{path: "/ui/portal/endpoints/ep_alpha/disable", form: a(), notFound: true}},
		"POST /ui/portal/endpoints/{id}/rotate-secret": {{path: "/ui/portal/endpoints/ep_alpha/rotate-secret", form: a(), notFound: true}},
		"POST /ui/portal/test":                         {{path: "/ui/portal/test", form: a()}},
		"GET /ui/portal/deliveries":                    {{path: "/ui/portal/deliveries?tenant=" + tenantA + "&event_type=order.created"}},
		// (no ClickHouse here: 503 at worst; the browser suite reads A's
		// real delivery as B and gets 404)
		"GET /ui/portal/deliveries/{id}": {{path: "/ui/portal/deliveries/msg_alpha1", notFound: true}},
		"GET /ui/portal/dlq":             {{path: "/ui/portal/dlq?tenant=" + tenantA}, {path: "/ui/portal/dlq?endpoint=ep_alpha", notFound: true}},
		"POST /ui/portal/dlq/replay": {
			{path: "/ui/portal/dlq/replay", form: a("delivery_id", "msg_alpha1")},
			{path: "/ui/portal/dlq/replay", form: a("endpoint", "ep_alpha"), notFound: true},
		},
		"POST /ui/portal/dlq/recover": {{path: "/ui/portal/dlq/recover", form: a("endpoint", "ep_alpha", "since", "2025-01-01T00:00"), notFound: true}},
		"GET /ui/portal/roi":          {{path: "/ui/portal/roi?tenant=" + tenantA + "&partner=" + tenantA}},
	}
	seen := 0
	for _, rt := range f.ui.routeTable() {
		if !strings.Contains(rt.pattern, "/ui/portal") {
			continue
		}
		seen++
		cs, ok := cases[rt.pattern]
		if !ok {
			t.Errorf("route %q is partner-scoped but has no isolation case here", rt.pattern)
			continue
		}
		for _, c := range cs {
			var code int
			var body string
			if c.form == nil {
				if !strings.HasPrefix(rt.pattern, "GET ") {
					t.Fatalf("%s: a GET case for a %s route", c.path, rt.pattern)
				}
				code, body, _ = b.get(c.path)
			} else {
				c.form.Set("csrf", tok)
				code, body = b.post(c.path, c.form, "")
			}
			if c.notFound && code != http.StatusNotFound && !(code == http.StatusServiceUnavailable && strings.Contains(c.path, "/deliveries/")) {
				t.Errorf("%s %s as B: %d, want 404", rt.pattern, c.path, code)
			}
			if code == http.StatusForbidden || code/100 == 5 && code != http.StatusServiceUnavailable {
				t.Errorf("%s %s as B: %d", rt.pattern, c.path, code)
			}
			for _, leak := range []string{"Alpha", "alpha.example", "ep_alpha", "msg_alpha1", "whsec_AlphaSECRET"} {
				if strings.Contains(body, leak) {
					t.Errorf("%s %s as B shows %q", rt.pattern, c.path, leak)
				}
			}
		}
	}
	if seen != len(cases) {
		t.Errorf("%d partner-scoped routes, %d cases: a case names a route that no longer exists", seen, len(cases))
	}
	for _, c := range f.admin.calls {
		if strings.Contains(c, tenantA) || strings.Contains(c, "ep_alpha") {
			t.Errorf("B's requests changed A: %s", c)
		}
	}
	if len(f.admin.calls) == 0 {
		t.Error("the add-endpoint case never reached the writer (the test would not see a leak)")
	}
	for _, q := range f.dlq.replays {
		if q.TenantID != tenantB {
			t.Errorf("a replay from B's portal ran for %q: %+v", q.TenantID, q)
		}
	}
	if len(f.dlq.replays) == 0 || len(f.tester.tenants) == 0 || len(f.roi.partners) == 0 {
		t.Errorf("cases never reached the backends: replays %d, tests %d, roi %d", len(f.dlq.replays), len(f.tester.tenants), len(f.roi.partners))
	}
	for _, got := range append(append([]string{}, f.tester.tenants...), f.roi.partners...) {
		if got != tenantB {
			t.Errorf("B's portal asked a backend for %s", got)
		}
	}
	if len(f.dlq.recovers) != 0 {
		t.Errorf("B recovered: %v", f.dlq.recovers)
	}
}

func TestEndpointFilterChecked(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.signInPartner(f.keyA)
	tok := b.csrf("/ui/portal/endpoints")
	for _, bad := range []string{"data.amount >", "event.data.amount + 1", "amount > 100.0"} {
		for _, p := range []string{"/ui/portal/endpoints", "/ui/portal/endpoints/ep_alpha"} {
			code, body := b.post(p, url.Values{"csrf": {tok}, "url": {"https://a.example/h"}, "filter": {bad}}, "")
			if code != http.StatusBadRequest || !strings.Contains(body, "filter") {
				t.Errorf("POST %s filter %q: %d, want 400 naming the filter", p, bad, code)
			}
		}
	}
	if len(f.admin.calls) != 0 {
		t.Fatalf("a bad filter was saved: %v", f.admin.calls)
	}
	good := `event.data.amount > 100.0 && event.type == "order.created"`
	if code, _ := b.post("/ui/portal/endpoints/ep_alpha", url.Values{"csrf": {tok}, "url": {"https://a.example/h"}, "filter": {good}}, ""); code != http.StatusOK {
		t.Fatalf("a good filter: %d", code)
	}
	if len(f.admin.calls) != 1 || !strings.HasSuffix(f.admin.calls[0], good) {
		t.Fatalf("calls %v", f.admin.calls)
	}
}

// TestEveryFormNeedsCSRF posts to every POST route of the mux, signed in
// as whoever may use it, without the CSRF token, with a wrong one, and
// with the right one from another origin: each is refused with 403 and
// changes nothing. Every form in the templates carries the token.
func TestEveryFormNeedsCSRF(t *testing.T) {
	f := newFixture(t)
	partner, operator, anon := f.browser(t), f.browser(t), f.browser(t)
	partner.signInPartner(f.keyA)
	operator.signInOperator()
	good := map[*browser]string{partner: partner.csrf("/ui/portal/endpoints"), operator: operator.csrf("/ui/console/"), anon: anon.csrf("/ui/login")}
	tok, _ := f.ui.links.issue("tn_aaaaaaaaaaaaaaaa")
	paths := map[string]string{
		"/ui/link/{token}":          "/ui/link/" + tok,
		"/ui/portal/endpoints/{id}": "/ui/portal/endpoints/ep_alpha",
		"/ui/console/tenants/{id}":  "/ui/console/tenants/tn_aaaaaaaaaaaaaaaa",
	}
	n := 0
	for _, rt := range f.ui.routeTable() {
		method, pattern, _ := strings.Cut(rt.pattern, " ")
		if method != http.MethodPost {
			continue
		}
		n++
		path := pattern
		for k, v := range paths {
			path = strings.Replace(path, k, v, 1)
		}
		path = strings.NewReplacer("{action}", "suspend", "{$}", "").Replace(path)
		who := anon
		switch {
		case strings.HasPrefix(pattern, "/ui/portal/"):
			who = partner
		case strings.HasPrefix(pattern, "/ui/console/"), pattern == "/ui/logout":
			who = operator
		}
		form := url.Values{"url": {"https://x.example/h"}, "name": {"Forged"}, "tier": {"standard"}, "webhook_url": {"https://x.example/h"},
			"endpoint": {"ep_alpha"}, "since": {"2025-01-01T00:00"}, "delivery_id": {"msg_alpha1"}, "api_key": {f.keyA}, "admin_token": {testToken}}
		for name, c := range map[string]struct {
			csrf, origin string
		}{
			"no token":            {"", ""},
			"a wrong token":       {wrongToken(good[who]), ""},
			"another session's":   {good[anon], ""},
			"from another origin": {good[who], "http://evil.example"},
		} {
			if who == anon && name == "another session's" {
				continue
			}
			v := url.Values{}
			for k, vs := range form {
				v[k] = vs
			}
			if c.csrf != "" {
				v.Set("csrf", c.csrf)
			}
			if code, _ := who.post(path, v, c.origin); code != http.StatusForbidden {
				t.Errorf("POST %s (%s) with %s: %d, want 403", path, rt.pattern, name, code)
			}
		}
	}
	if n < 15 {
		t.Fatalf("only %d POST routes walked", n)
	}
	if len(f.admin.calls) != 0 || f.admin.n != 0 || len(f.dlq.replays) != 0 || len(f.dlq.recovers) != 0 || len(f.tester.tenants) != 0 {
		t.Errorf("refused forms changed something: admin %v (created %d), replays %d, recovers %d, tests %d",
			f.admin.calls, f.admin.n, len(f.dlq.replays), len(f.dlq.recovers), len(f.tester.tenants))
	}
	// Still signed in (a refused sign-out signs nobody out), and the link unused.
	if _, body, _ := partner.get("/ui/portal/"); !strings.Contains(body, "Alpha") {
		t.Error("a refused form ended the partner's session")
	}
	if !f.ui.links.valid(tok) {
		t.Error("a refused form used the portal link")
	}

	// Every POST form of every template sends the CSRF token.
	formRe := regexp.MustCompile(`(?s)<form[^>]*method="post"[^>]*>.*?</form>`)
	ents, err := templateFS.ReadDir("templates")
	if err != nil {
		t.Fatal(err)
	}
	forms := 0
	for _, e := range ents {
		b, _ := templateFS.ReadFile("templates/" + e.Name())
		for _, m := range formRe.FindAllString(string(b), -1) {
			forms++
			if !strings.Contains(m, `name="csrf" value="{{`) {
				t.Errorf("%s: a form without the CSRF token: %.120s", e.Name(), m)
			}
		}
	}
	if forms < 15 {
		t.Errorf("only %d POST forms found in the templates", forms)
	}
}

// TestConsoleDLQ: the operator sees every tenant's dead letters, narrows
// them to one tenant, and replays one by its row or a tenant's by filter.
func TestConsoleDLQ(t *testing.T) {
	f := newFixture(t)
	f.dlq.items = append(f.dlq.items, DeadLetter{DeliveryID: "msg_beta1", TenantID: "tn_bbbbbbbbbbbbbbbb", EndpointID: "ep_beta",
		EventType: "order.created", Reason: "attempts exhausted", Replayable: true})
	op := f.browser(t)
	op.signInOperator()
	_, body, _ := op.get("/ui/console/dlq")
	if !strings.Contains(body, "msg_alpha1") || !strings.Contains(body, "msg_beta1") {
		t.Fatalf("the console DLQ lacks a tenant's dead letter:\n%s", body)
	}
	_, body, _ = op.get("/ui/console/dlq?tenant=tn_bbbbbbbbbbbbbbbb")
	if strings.Contains(body, "msg_alpha1") || !strings.Contains(body, "msg_beta1") {
		t.Fatalf("the console DLQ filtered to B:\n%s", body)
	}
	tok := op.csrf("/ui/console/dlq")
	if code, body := op.post("/ui/console/dlq/replay", url.Values{"csrf": {tok}, "delivery_id": {"msg_beta1"}, "tenant": {"tn_bbbbbbbbbbbbbbbb"}}, ""); code != http.StatusOK ||
		!strings.Contains(body, "Replayed 1 dead letter") {
		t.Fatalf("replay one: %d", code)
	}
	if code, _ := op.post("/ui/console/dlq/replay", url.Values{"csrf": {tok}, "tenant": {"tn_aaaaaaaaaaaaaaaa"}, "event_type": {"order.created"}}, ""); code != http.StatusOK {
		t.Fatalf("replay a tenant's: %d", code)
	}
	if len(f.dlq.replays) != 2 || f.dlq.replays[0].TenantID != "tn_bbbbbbbbbbbbbbbb" || strings.Join(f.dlq.replays[0].DeliveryIDs, ",") != "msg_beta1" ||
		f.dlq.replays[1].TenantID != "tn_aaaaaaaaaaaaaaaa" || f.dlq.replays[1].EventType != "order.created" || len(f.dlq.replays[1].DeliveryIDs) != 0 {
		t.Fatalf("replays %+v", f.dlq.replays)
	}
	// A partner cannot use the console's replay.
	p := f.browser(t)
	p.signInPartner(f.keyB)
	ptok := p.csrf("/ui/portal/dlq")
	if code, _ := p.post("/ui/console/dlq/replay", url.Values{"csrf": {ptok}, "tenant": {"tn_aaaaaaaaaaaaaaaa"}}, ""); code != http.StatusForbidden {
		t.Errorf("a partner posting to the console's replay: %d, want 403", code)
	}
	if len(f.dlq.replays) != 2 {
		t.Errorf("a partner's console replay ran: %+v", f.dlq.replays[2:])
	}
}

// TestReasonClassNamesEveryReason: every reason code the webhooks
// processor writes into the delivery log has words on the delivery page,
// and the typed reason wins over the guess from the error text.
func TestReasonClassNamesEveryReason(t *testing.T) {
	for _, r := range webhooks.Reasons {
		if c := reasonClass(string(r)); c == "" || strings.Contains(c, "_") {
			t.Errorf("reason %s: class %q", r, c)
		}
	}
	if got := reasonClass("connection_refused"); got != errorClass("retry", 0, "connection refused") {
		t.Errorf("typed reason %q and the error text's class %q differ", got, errorClass("retry", 0, "connection refused"))
	}
	if got := reasonClass("timeout"); got != "timeout" {
		t.Errorf("timeout: %q", got)
	}
}

// wrongToken is tok with its first character changed (never tok itself:
// "x"+tok[1:] is tok when tok starts with x).
func wrongToken(tok string) string {
	if strings.HasPrefix(tok, "x") {
		return "y" + tok[1:]
	}
	return "x" + tok[1:]
}
