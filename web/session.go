package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Session kinds.
const (
	kindAnon     = "anon"     // before sign-in: holds only the CSRF token of the sign-in forms
	kindPartner  = "partner"  // a tenant, signed in with an API key or a portal link
	kindOperator = "operator" // signed in with the admin token
)

// cookieName is the session cookie. Its value is a random session id; the
// server keeps everything else (never a key, token or tenant id in it).
const cookieName = "partners_ui"

// anonTTL bounds a session that never signed in.
const anonTTL = 15 * time.Minute

// maxSessions bounds the session table; at the bound the oldest anonymous
// sessions go first (anyone can create those by fetching the sign-in page).
const maxSessions = 50_000

type session struct {
	key      string // sha256 of the cookie value: the table's key
	kind     string
	tenantID string // partner sessions
	keyID    string // partner sessions signed in with a key: the key's id (the session ends with the key)
	via      string // "api key" or "portal link"
	csrf     string
	created  time.Time
	seen     time.Time
	flash    string
	flashErr bool
}

// sessions is the server-side session table (in memory: a restart signs
// everybody out; sessions are per process, so several replicas need sticky
// routing). Sessions expire after an idle timeout and a maximum age.
type sessions struct {
	idle, max time.Duration
	now       func() time.Time

	mu    sync.Mutex
	m     map[string]*session
	swept time.Time
}

func newSessions(idle, max time.Duration, now func() time.Time) *sessions {
	return &sessions{idle: idle, max: max, now: now, m: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func (s *sessions) expired(x *session, now time.Time) bool {
	if x.kind == kindAnon {
		return now.Sub(x.seen) > anonTTL
	}
	return now.Sub(x.seen) > s.idle || now.Sub(x.created) > s.max
}

// get returns the live session of the request's cookie and marks it seen.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return nil
	}
	k := hashToken(c.Value)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.m[k]
	if x == nil {
		return nil
	}
	if s.expired(x, now) {
		delete(s.m, k)
		return nil
	}
	x.seen = now
	return x
}

// create starts a session of kind and returns it with its cookie value.
// A sign-in always creates a new session (a fixed id cannot be carried
// across it); the old one is dropped by the caller.
func (s *sessions) create(kind string) (*session, string) {
	tok := randomToken()
	now := s.now()
	x := &session{key: hashToken(tok), kind: kind, csrf: randomToken(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	s.m[x.key] = x
	return x, tok
}

func (s *sessions) drop(x *session) {
	if x == nil {
		return
	}
	s.mu.Lock()
	delete(s.m, x.key)
	s.mu.Unlock()
}

// dropTenant ends every session of a tenant (suspension).
func (s *sessions) dropTenant(tenantID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, x := range s.m {
		if x.kind == kindPartner && x.tenantID == tenantID {
			delete(s.m, k)
		}
	}
}

// sweep removes expired sessions at most once a minute, and the oldest
// anonymous ones when the table is full. Called with mu held.
func (s *sessions) sweep(now time.Time) {
	if now.Sub(s.swept) < time.Minute && len(s.m) < maxSessions {
		return
	}
	s.swept = now
	for k, x := range s.m {
		if s.expired(x, now) {
			delete(s.m, k)
		}
	}
	if len(s.m) < maxSessions {
		return
	}
	var anon []*session
	for _, x := range s.m {
		if x.kind == kindAnon {
			anon = append(anon, x)
		}
	}
	sort.Slice(anon, func(i, j int) bool { return anon[i].seen.Before(anon[j].seen) })
	for _, x := range anon[:len(anon)/2+1] {
		delete(s.m, x.key)
	}
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// setFlash keeps a one-time message for the next page.
func (s *sessions) setFlash(x *session, msg string, isErr bool) {
	s.mu.Lock()
	x.flash, x.flashErr = msg, isErr
	s.mu.Unlock()
}

func (s *sessions) takeFlash(x *session) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, e := x.flash, x.flashErr
	x.flash, x.flashErr = "", false
	return m, e
}

// csrfOK checks a form's CSRF token against its session in constant time.
func csrfOK(x *session, r *http.Request) bool {
	if x == nil {
		return false
	}
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(x.csrf)) == 1
}

// sameOrigin refuses requests a browser marks as cross-site (Sec-Fetch-Site)
// or whose Origin is another host: a second line behind the CSRF token.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true // not sent by older browsers on same-origin form posts
	}
	if o == "null" {
		// Sent under a no-referrer policy; trusted only with the browser's
		// own same-origin mark.
		return r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	return o == "http://"+r.Host || o == "https://"+r.Host
}

// throttle limits failed sign-ins per client address: a token bucket of
// burst attempts refilled at one per interval. The admin token may be
// guessable; API keys are not, but guessing costs the server a hash.
type throttle struct {
	burst    float64
	interval time.Duration
	now      func() time.Time

	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newThrottle(burst int, interval time.Duration, now func() time.Time) *throttle {
	return &throttle{burst: float64(burst), interval: interval, now: now, m: map[string]*bucket{}}
}

func clientAddr(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

func (t *throttle) fill(b *bucket, now time.Time) {
	b.tokens = min(t.burst, b.tokens+float64(now.Sub(b.at))/float64(t.interval))
	b.at = now
}

// allowed reports whether addr may try to sign in now.
func (t *throttle) allowed(addr string) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.m[addr]
	if b == nil {
		return true
	}
	t.fill(b, now)
	return b.tokens >= 1
}

// failed takes one token from addr.
func (t *throttle) failed(addr string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) > 10_000 {
		for k, b := range t.m {
			t.fill(b, now)
			if b.tokens >= t.burst {
				delete(t.m, k)
			}
		}
	}
	b := t.m[addr]
	if b == nil {
		b = &bucket{tokens: t.burst, at: now}
		t.m[addr] = b
	}
	t.fill(b, now)
	b.tokens--
}
