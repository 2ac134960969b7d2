package registry

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

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
