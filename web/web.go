// Package web owns the partner portal and the operator console: the
// server-rendered pages under /ui/ on listeners.admin (`partners dev` and
// `partners control-plane`), their sessions, CSRF protection and
// Content-Security-Policy, and the ClickHouse reads only the pages make
// (a tenant's deliveries and a delivery's attempts, statements in
// schemas/chsql).
//
// A partner signs in with its API key, or with a single-use portal link an
// operator issued, and sees only its own tenant: endpoints (add, edit,
// enable/disable, rotate the signing secret, send a test event),
// deliveries and their attempts, dead letters (replay, recover since a
// time) and ROI per attribution model. An operator signs in with the admin
// token: tenants (search, onboard, suspend/activate, rotate key or secret,
// issue a portal link), the DLQ of every tenant, and health.
//
// The package imports no area: what it shows and changes comes through the
// small interfaces below, which internal/runner implements with the tenant
// registry and its writer, the webhooks processor's DLQ and test delivery,
// and roi.Load. Pages are html/template; the one script and stylesheet are
// embedded files (the CSP allows no inline script or style); every page
// works without the script.
package web

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/partners-engine/partners-engine/schemas"
)

// Prefix is the path the UI is mounted at.
const Prefix = "/ui/"

// Tenants is the tenant registry as the UI reads it.
type Tenants interface {
	Get(id string) (*schemas.Tenant, bool)
	List() []*schemas.Tenant
	ByKeyHash(hash string, now time.Time) (*schemas.Tenant, bool)
}

// Error kinds a TenantAdmin (and the other backends) wrap, so a page can
// tell the user's mistake from a failure of the system.
var (
	ErrInvalid     = errors.New("invalid")
	ErrConflict    = errors.New("conflict")
	ErrNotFound    = errors.New("not found")
	ErrUnavailable = errors.New("not available in this process")
)

// Onboard is what an operator gives to onboard a partner.
type Onboard struct {
	Name       string
	Tier       string
	WebhookURL string
	Events     []string
}

// Credentials are a new tenant's API key and webhook secret, shown once.
type Credentials struct {
	Tenant        *schemas.Tenant
	APIKey        string
	WebhookSecret string
}

// EndpointChange adds an endpoint (ID "") or changes one.
type EndpointChange struct {
	ID         string
	URL        string
	EventTypes []string
	Filter     string
	Disabled   *bool // nil: unchanged
}

// TenantAdmin changes tenants (the registry's writer). Errors wrap
// ErrInvalid (with a message naming the field), ErrConflict or ErrNotFound.
type TenantAdmin interface {
	Create(ctx context.Context, o Onboard) (*Credentials, error)
	SaveEndpoint(ctx context.Context, tenantID string, e EndpointChange) (*schemas.Tenant, error)
	SetStatus(ctx context.Context, tenantID, status string) (*schemas.Tenant, error)
	RotateKey(ctx context.Context, tenantID string) (*schemas.Tenant, string, error)
	RotateSecret(ctx context.Context, tenantID, endpointID string) (*schemas.Tenant, string, error)
}

// DLQQuery selects dead letters. TenantID is always set by the portal
// (to the signed-in tenant), never taken from the request.
type DLQQuery struct {
	TenantID    string
	EndpointID  string
	EventType   string
	Since       time.Time
	DeliveryIDs []string
	Status      string // "": waiting dead letters; "all", or an index state (replayed, delivered, dropped)
	Limit       int
	PageToken   string
}

// DeadLetter is one dead letter as the pages show it (never its payload).
type DeadLetter struct {
	DeliveryID    string
	TenantID      string
	EndpointID    string
	EventID       string
	EventType     string
	Attempts      int
	LastStatus    int
	LastError     string
	Reason        string
	ReasonCode    string
	Status        string // index state (dead, replayed, delivered, …); "" when the backend has none
	TraceID       string
	DeadAt        time.Time
	LastAttemptAt time.Time
	Replayable    bool
}

// DeadLetters lists and replays the webhooks DLQ. Recover re-delivers an
// endpoint's failed deliveries since a time; a backend without it returns
// ErrUnavailable. Replay with DeliveryIDs replays exactly those (a backend
// that cannot select single deliveries returns ErrUnavailable for it).
type DeadLetters interface {
	List(ctx context.Context, q DLQQuery) (items []DeadLetter, next string, err error)
	Replay(ctx context.Context, q DLQQuery) (int, error)
	Recover(ctx context.Context, tenantID, endpointID string, since time.Time) (int, error)
}

// TestResult is the outcome of one test delivery.
type TestResult struct {
	EndpointID string
	Outcome    string
	StatusCode int
	Error      string
	LatencyMS  float64
}

// Tester sends a signed partner.test event to a tenant's enabled endpoints.
type Tester interface {
	Test(ctx context.Context, t *schemas.Tenant) ([]TestResult, error)
}

// ROIDay is one partner's figures for one model on one UTC day (or a whole
// window, for the totals).
type ROIDay struct {
	Day          time.Time
	Model        string
	Revenue      float64
	Cost         float64
	Conversions  float64
	Leads        uint64
	NewCustomers float64
	Customers    uint64
	ROI          *float64
	CPL          *string
	CAC          *string
	LTV          *string
}

// ROIReport is a partner's ROI over a window: per model per day, and the
// window's totals per model (CPL, CAC and LTV are ratios of sums, so they
// come from the window, not from adding days).
type ROIReport struct {
	From, To time.Time
	Daily    []ROIDay
	Totals   []ROIDay
}

// ROI reads a partner's ROI.
type ROI interface {
	Report(ctx context.Context, partnerID string, days int) (*ROIReport, error)
}

// HealthCheck is one dependency's status.
type HealthCheck struct {
	Name   string
	OK     bool
	Detail string
}

// Lag is a consumer group's lag on a topic.
type Lag struct {
	Group, Topic string
	Lag          int64
}

// BreakerState is one endpoint's circuit breaker.
type BreakerState struct {
	TenantID, TenantName, EndpointID, State string
}

// XDSVersion is a region's current snapshot version.
type XDSVersion struct {
	Region, Version string
}

// HealthReport is what the health page shows; Notes say what this
// process cannot see (a component it does not run).
type HealthReport struct {
	Checks   []HealthCheck
	Lag      []Lag
	Breakers []BreakerState
	XDS      []XDSVersion
	Notes    []string
}

// Health reports the system's health as this process sees it.
type Health interface {
	Health(ctx context.Context) HealthReport
}

// Options configure the UI.
type Options struct {
	AdminToken string // the operator's sign-in; compared in constant time, never stored in a session
	Pepper     string // API key hashing (internal/apikey)
	Tenants    Tenants
	Admin      TenantAdmin
	DLQ        DeadLetters // nil: the DLQ pages say where it is
	Tester     Tester      // nil: no test events from this process
	ROI        ROI         // nil: no ROI page
	Health     Health
	// ClickHouse returns the connection for the delivery pages (nil while
	// unavailable).
	ClickHouse func() driver.Conn
	// EventTypes are the configured event types (the filter and endpoint forms).
	EventTypes []string
	// SessionIdle and SessionMax bound a signed-in session; LinkTTL a portal link.
	SessionIdle, SessionMax, LinkTTL time.Duration
	// SecureCookies marks the cookie Secure even on a plain-HTTP listener
	// (behind a TLS-terminating proxy); on TLS it always is.
	SecureCookies bool
	Log           *slog.Logger
	Now           func() time.Time
}

// Server serves the UI.
type Server struct {
	opt      Options
	log      *slog.Logger
	mux      *http.ServeMux
	pages    map[string]*template.Template
	static   http.Handler
	sess     *sessions
	links    *links
	throttle *throttle
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New returns the UI server.
func New(opt Options) (*Server, error) {
	if opt.Tenants == nil || opt.Admin == nil {
		return nil, errors.New("web: Tenants and Admin are required")
	}
	if opt.AdminToken == "" || opt.Pepper == "" {
		return nil, errors.New("web: the admin token and the key pepper are required")
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.SessionIdle <= 0 {
		opt.SessionIdle = 30 * time.Minute
	}
	if opt.SessionMax <= 0 {
		opt.SessionMax = 8 * time.Hour
	}
	if opt.LinkTTL <= 0 {
		opt.LinkTTL = 15 * time.Minute
	}
	if opt.ClickHouse == nil {
		opt.ClickHouse = func() driver.Conn { return nil }
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	s := &Server{opt: opt, log: opt.Log.With("component", "ui"), mux: http.NewServeMux(), pages: pages,
		static:   http.StripPrefix(Prefix+"static/", http.FileServerFS(sub)),
		sess:     newSessions(opt.SessionIdle, opt.SessionMax, opt.Now),
		links:    newLinks(opt.LinkTTL, opt.Now),
		throttle: newThrottle(10, 6*time.Second, opt.Now),
	}
	s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler: security headers on every answer,
// then the page.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin: the path (a portal link's token) never leaves this site,
	// and same-origin form posts keep their Origin header (no-referrer
	// would make it "null").
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if strings.HasPrefix(r.URL.Path, Prefix+"static/") {
		h.Set("Cache-Control", "public, max-age=300")
		s.static.ServeHTTP(w, r)
		return
	}
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in page", "path", r.URL.Path, "panic", fmt.Sprint(v))
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	s.mux.ServeHTTP(w, r)
}

// handler is a page handler with its session (nil: none).
type handler func(w http.ResponseWriter, r *http.Request, x *session)

// route is one pattern of the UI's mux and its handler.
type route struct {
	pattern string
	h       http.HandlerFunc
}

// routeTable is every route of the UI (the isolation test walks the
// partner-scoped ones, so a new portal route cannot go untested).
func (s *Server) routeTable() []route {
	return []route{
		{"GET /ui/{$}", s.home},
		{"GET /ui/login", s.loginPage},
		{"POST /ui/login/partner", s.post(kindAnon, s.loginPartner)},
		{"POST /ui/login/operator", s.post(kindAnon, s.loginOperator)},
		{"GET /ui/link/{token}", s.linkPage},
		{"POST /ui/link/{token}", s.post(kindAnon, s.redeemLink)},
		{"POST /ui/logout", s.post("", s.logout)},

		{"GET /ui/portal/{$}", s.get(kindPartner, s.portalHome)},
		{"GET /ui/portal/endpoints", s.get(kindPartner, s.endpoints)},
		{"POST /ui/portal/endpoints", s.post(kindPartner, s.addEndpoint)},
		{"GET /ui/portal/endpoints/{id}", s.get(kindPartner, s.endpoint)},
		{"POST /ui/portal/endpoints/{id}", s.post(kindPartner, s.saveEndpoint)},
		{"POST /ui/portal/endpoints/{id}/enable", s.post(kindPartner, s.setEndpointEnabled(true))},
		{"POST /ui/portal/endpoints/{id}/disable", s.post(kindPartner, s.setEndpointEnabled(false))},
		{"POST /ui/portal/endpoints/{id}/rotate-secret", s.post(kindPartner, s.rotateEndpointSecret)},
		{"POST /ui/portal/test", s.post(kindPartner, s.sendTest)},
		{"GET /ui/portal/deliveries", s.get(kindPartner, s.deliveries)},
		{"GET /ui/portal/deliveries/{id}", s.get(kindPartner, s.delivery)},
		{"GET /ui/portal/dlq", s.get(kindPartner, s.portalDLQ)},
		{"POST /ui/portal/dlq/replay", s.post(kindPartner, s.portalReplay)},
		{"POST /ui/portal/dlq/recover", s.post(kindPartner, s.portalRecover)},
		{"GET /ui/portal/roi", s.get(kindPartner, s.roiPage)},

		{"GET /ui/console/{$}", s.get(kindOperator, s.tenants)},
		{"POST /ui/console/tenants", s.post(kindOperator, s.onboard)},
		{"GET /ui/console/tenants/{id}", s.get(kindOperator, s.tenant)},
		{"POST /ui/console/tenants/{id}/{action}", s.post(kindOperator, s.tenantAction)},
		{"GET /ui/console/dlq", s.get(kindOperator, s.consoleDLQ)},
		{"POST /ui/console/dlq/replay", s.post(kindOperator, s.consoleReplay)},
		{"GET /ui/console/health", s.get(kindOperator, s.health)},

		// Anything else: a form post is checked like every form first (so a
		// forged one is refused the same way wherever it points), then 404.
		{"POST /ui/", s.post("", s.notFound)},
		{"/ui/", func(w http.ResponseWriter, r *http.Request) { s.notFound(w, r, s.sess.get(r)) }},
	}
}

func (s *Server) routes() {
	for _, rt := range s.routeTable() {
		s.mux.HandleFunc(rt.pattern, rt.h)
	}
}

// current returns the session of r if it is live and of kind. A partner
// session whose tenant is gone or suspended, or whose sign-in key has
// expired (rotated), ends here.
func (s *Server) current(r *http.Request, kind string) *session {
	x := s.sess.get(r)
	if x == nil || kind != "" && x.kind != kind {
		return nil
	}
	if x.kind == kindPartner {
		t, ok := s.opt.Tenants.Get(x.tenantID)
		if !ok || t.Status != schemas.StatusActive || x.keyID != "" && !keyLive(t, x.keyID, s.opt.Now()) {
			s.sess.drop(x)
			return nil
		}
	}
	return x
}

func keyLive(t *schemas.Tenant, keyID string, now time.Time) bool {
	for _, k := range t.Keys {
		if k.ID == keyID {
			return k.ExpiresAt == nil || now.Before(*k.ExpiresAt)
		}
	}
	return false
}

// get wraps a GET page that needs a session of kind.
func (s *Server) get(kind string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		x := s.current(r, kind)
		if x == nil {
			http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
			return
		}
		h(w, r, x)
	}
}

// post wraps a form handler: the request must be same-origin and carry the
// session's CSRF token; kind "" accepts any session, kindAnon any session
// at all (the sign-in forms run on the pre-sign-in session).
func (s *Server) post(kind string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var x *session
		if kind == kindAnon || kind == "" {
			x = s.sess.get(r)
		} else {
			x = s.current(r, kind)
		}
		if !sameOrigin(r) || !csrfOK(x, r) {
			s.log.Warn("form refused: missing or wrong CSRF token or cross-site request", "path", r.URL.Path, "remote", clientAddr(r),
				"session", x != nil, "same_origin", sameOrigin(r), "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
			s.renderStatus(w, r, nil, http.StatusForbidden, "error.html", errorPage{Title: "Request refused",
				Message: "This form was not sent from this site, or your session has ended. Reload the page and try again."})
			return
		}
		h(w, r, x)
	}
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil || s.opt.SecureCookies, SameSite: http.SameSiteStrictMode})
}

// startSession replaces the request's session with a new one of kind.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, old *session, kind string) *session {
	s.sess.drop(old)
	x, tok := s.sess.create(kind)
	maxAge := int(s.opt.SessionMax / time.Second)
	if kind == kindAnon {
		maxAge = int(anonTTL / time.Second)
	}
	s.setCookie(w, r, tok, maxAge)
	return x
}

// anonSession returns the request's session, or a new anonymous one (the
// sign-in and link pages need a CSRF token before anyone is signed in).
func (s *Server) anonSession(w http.ResponseWriter, r *http.Request) *session {
	if x := s.sess.get(r); x != nil {
		return x
	}
	return s.startSession(w, r, nil, kindAnon)
}

func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	x := s.sess.get(r)
	switch {
	case x != nil && x.kind == kindPartner:
		http.Redirect(w, r, Prefix+"portal/", http.StatusSeeOther)
	case x != nil && x.kind == kindOperator:
		http.Redirect(w, r, Prefix+"console/", http.StatusSeeOther)
	default:
		http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
	}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	x := s.anonSession(w, r)
	s.render(w, r, x, "login.html", loginPage{})
}

type loginPage struct {
	Error string
}

func (s *Server) loginFailed(w http.ResponseWriter, r *http.Request, x *session, msg string) {
	s.throttle.failed(clientAddr(r))
	s.renderStatus(w, r, x, http.StatusUnauthorized, "login.html", loginPage{Error: msg})
}

func (s *Server) loginPartner(w http.ResponseWriter, r *http.Request, x *session) {
	if !s.throttle.allowed(clientAddr(r)) {
		s.renderStatus(w, r, x, http.StatusTooManyRequests, "login.html", loginPage{Error: "Too many failed sign-ins from this address. Wait a minute and try again."})
		return
	}
	key := strings.TrimSpace(r.PostFormValue("api_key"))
	t, keyID, ok := s.tenantByKey(key)
	if !ok {
		s.log.Info("portal sign-in refused", "remote", clientAddr(r))
		s.loginFailed(w, r, x, "That API key is not valid.")
		return
	}
	if t.Status != schemas.StatusActive {
		s.loginFailed(w, r, x, "This partner account is "+t.Status+".")
		return
	}
	n := s.startSession(w, r, x, kindPartner)
	n.tenantID, n.keyID, n.via = t.ID, keyID, "API key"
	s.log.Info("portal sign-in", "tenant_id", t.ID, "via", "api_key")
	http.Redirect(w, r, Prefix+"portal/", http.StatusSeeOther)
}

func (s *Server) loginOperator(w http.ResponseWriter, r *http.Request, x *session) {
	if !s.throttle.allowed(clientAddr(r)) {
		s.renderStatus(w, r, x, http.StatusTooManyRequests, "login.html", loginPage{Error: "Too many failed sign-ins from this address. Wait a minute and try again."})
		return
	}
	tok := r.PostFormValue("admin_token")
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.opt.AdminToken)) != 1 {
		s.log.Info("console sign-in refused", "remote", clientAddr(r))
		s.loginFailed(w, r, x, "That admin token is not valid.")
		return
	}
	s.startSession(w, r, x, kindOperator)
	s.log.Info("console sign-in", "remote", clientAddr(r))
	http.Redirect(w, r, Prefix+"console/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, x *session) {
	s.sess.drop(x)
	s.setCookie(w, r, "", -1)
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

type linkPageData struct {
	Token string
	Valid bool
	Error string
}

// linkPage shows a portal link's "continue" button: the link is used by
// the POST, so a mail scanner or link preview fetching it uses nothing.
func (s *Server) linkPage(w http.ResponseWriter, r *http.Request) {
	x := s.anonSession(w, r)
	tok := r.PathValue("token")
	d := linkPageData{Token: tok, Valid: len(tok) < 100 && s.links.valid(tok)}
	status := http.StatusOK
	if !d.Valid {
		status = http.StatusGone
	}
	s.renderStatus(w, r, x, status, "link.html", d)
}

func (s *Server) redeemLink(w http.ResponseWriter, r *http.Request, x *session) {
	id, ok := s.links.redeem(r.PathValue("token"))
	var t *schemas.Tenant
	if ok {
		t, ok = s.opt.Tenants.Get(id)
	}
	if !ok || t.Status != schemas.StatusActive {
		s.renderStatus(w, r, x, http.StatusGone, "link.html", linkPageData{Error: "This portal link was already used or has expired. Ask your contact for a new one."})
		return
	}
	n := s.startSession(w, r, x, kindPartner)
	n.tenantID, n.via = t.ID, "portal link"
	s.log.Info("portal sign-in", "tenant_id", t.ID, "via", "portal_link")
	http.Redirect(w, r, Prefix+"portal/", http.StatusSeeOther)
}
