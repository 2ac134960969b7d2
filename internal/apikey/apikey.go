// Package apikey owns the partners' API key contract shared by the control
// plane (which issues keys and stores their hashes) and the edge (which
// checks them on every request): the key format (a tier prefix and 256 random
// bits), the keyed hash that is the only stored form, and the constant-time
// comparison of hashes.
package apikey

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strings"
	"sync"
)

// prefixes are the tier prefixes of API keys: a leaked key tells at a
// glance which environment it opens, and secret scanners can match it.
var prefixes = map[string]string{
	"sandbox":    "pk_sbx_",
	"standard":   "pk_std_",
	"enterprise": "pk_ent_",
}

// New returns a fresh random key for the tier: prefix + 43 characters of
// base64url (256 bits).
func New(tier string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefixes[tier] + base64.RawURLEncoding.EncodeToString(b)
}

// LooksValid reports whether s has the shape of an API key, so malformed
// credentials are refused before any hashing or lookup.
func LooksValid(s string) bool {
	if len(s) < 20 || len(s) > 128 {
		return false
	}
	ok := false
	for _, p := range prefixes {
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

// Hash is the stored form of an API key: hex HMAC-SHA256 keyed with the
// pepper. Without the pepper a leaked tenants topic yields no usable keys.
func Hash(pepper, key string) string {
	m := hmac.New(sha256.New, []byte(pepper))
	m.Write([]byte(key))
	return hex.EncodeToString(m.Sum(nil))
}

// Hasher computes Hash for one pepper, reusing HMAC states across calls
// (the edge hashes the key of every request). Safe for concurrent use.
type Hasher struct {
	pool sync.Pool
}

// NewHasher returns a Hasher of pepper.
func NewHasher(pepper string) *Hasher {
	h := &Hasher{}
	h.pool.New = func() any { return hmac.New(sha256.New, []byte(pepper)) }
	return h
}

// Hash is Hash(pepper, key).
func (h *Hasher) Hash(key string) string {
	m := h.pool.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(key))
	var sum [sha256.Size]byte
	out := hex.EncodeToString(m.Sum(sum[:0]))
	h.pool.Put(m)
	return out
}

// Equal compares two key hashes in constant time.
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// DisplayPrefix is what operators see of a key: its tier prefix and the
// first four random characters.
func DisplayPrefix(key string) string {
	if len(key) < 11 {
		return key
	}
	return key[:11]
}
