package web

import (
	"sync"
	"time"
)

// portalLink is a short-lived, single-use sign-in link an operator issues
// for a partner. Only the SHA-256 of its token is kept; the token itself is
// shown once, to the operator who issued it.
type portalLink struct {
	tenantID string
	expires  time.Time
}

// links holds the outstanding portal links in memory: a link is redeemed
// at the process that issued it, and a restart voids every link.
type links struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[string]portalLink
}

func newLinks(ttl time.Duration, now func() time.Time) *links {
	return &links{ttl: ttl, now: now, m: map[string]portalLink{}}
}

// issue returns a new link token for tenantID and when it expires.
func (l *links) issue(tenantID string) (string, time.Time) {
	tok := randomToken()
	now := l.now()
	exp := now.Add(l.ttl)
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, x := range l.m {
		if !now.Before(x.expires) {
			delete(l.m, k)
		}
	}
	l.m[hashToken(tok)] = portalLink{tenantID: tenantID, expires: exp}
	return tok, exp
}

// valid reports whether tok is an outstanding link, without using it.
func (l *links) valid(tok string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	x, ok := l.m[hashToken(tok)]
	return ok && l.now().Before(x.expires)
}

// redeem uses tok: it returns the tenant once, and never again.
func (l *links) redeem(tok string) (string, bool) {
	k := hashToken(tok)
	l.mu.Lock()
	defer l.mu.Unlock()
	x, ok := l.m[k]
	delete(l.m, k)
	if !ok || !l.now().Before(x.expires) {
		return "", false
	}
	return x.tenantID, true
}

// revokeTenant voids every outstanding link of a tenant (suspension).
func (l *links) revokeTenant(tenantID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, x := range l.m {
		if x.tenantID == tenantID {
			delete(l.m, k)
		}
	}
}
