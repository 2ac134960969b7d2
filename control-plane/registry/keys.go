package registry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/partners-engine/partners-engine/schemas"
)

// keyPrefixes are the tier prefixes of API keys: a leaked key tells at a
// glance which environment it opens, and secret scanners can match it.
var keyPrefixes = map[string]string{
	"sandbox":    "pk_sbx_",
	"standard":   "pk_std_",
	"enterprise": "pk_ent_",
}

// NewAPIKey returns a fresh random key for the tier: prefix + 43 characters of
// base64url (256 bits).
func NewAPIKey(tier string) string {
	return keyPrefixes[tier] + randomString(32)
}

// KeyLooksValid reports whether s has the shape of an API key, so malformed
// credentials are refused before any hashing or lookup.
func KeyLooksValid(s string) bool {
	if len(s) < 20 || len(s) > 128 {
		return false
	}
	ok := false
	for _, p := range keyPrefixes {
		if strings.HasPrefix(s, p) {
			ok = true
		}
	}
	if !ok {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// HashKey is the stored form of an API key: hex HMAC-SHA256 keyed with the
// pepper. Without the pepper a leaked tenants topic yields no usable keys.
func HashKey(pepper, key string) string {
	m := hmac.New(sha256.New, []byte(pepper))
	m.Write([]byte(key))
	return hex.EncodeToString(m.Sum(nil))
}

// EqualHash compares two key hashes in constant time.
func EqualHash(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// KeyDisplayPrefix is what operators see of a key: its tier prefix and the
// first four random characters.
func KeyDisplayPrefix(key string) string {
	if len(key) < 11 {
		return key
	}
	return key[:11]
}

// NewWebhookSecret returns a Standard Webhooks secret: "whsec_" + base64 of
// 32 random bytes.
func NewWebhookSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// NewID returns a random identifier with a type prefix: lower-case hex, safe
// in URLs, headers, stat names and ClickHouse keys.
func NewID(prefix string) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefix + hex.EncodeToString(b)
}

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

type ctxKey struct{}

// WithTenant returns ctx carrying the authenticated tenant.
func WithTenant(ctx context.Context, t *schemas.Tenant) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// TenantFrom returns the authenticated tenant of ctx, if any.
func TenantFrom(ctx context.Context) (*schemas.Tenant, bool) {
	t, ok := ctx.Value(ctxKey{}).(*schemas.Tenant)
	return t, ok
}
