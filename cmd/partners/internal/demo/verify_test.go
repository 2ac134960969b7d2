package demo

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/processors/webhooks"
)

// TestVerifySignatureAgreesWithTheLibrary: the demo's verifier accepts and
// refuses exactly what the official Standard Webhooks library does.
func TestVerifySignatureAgreesWithTheLibrary(t *testing.T) {
	t.Parallel()
	old, cur, other := registry.NewWebhookSecret(), registry.NewWebhookSecret(), registry.NewWebhookSecret()
	body := []byte(`{"type":"order.created","data":{"total":"10.50"}}`)
	headers := func(secrets []string, ts time.Time, b []byte) http.Header {
		sig, err := webhooks.Sign(secrets, "msg_1", ts, b)
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		h.Set("webhook-id", "msg_1")
		h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
		h.Set("webhook-signature", sig)
		return h
	}
	now := time.Now()
	for _, c := range []struct {
		name   string
		secret string
		h      http.Header
		body   []byte
		ok     bool
	}{
		{"signed", cur, headers([]string{cur}, now, body), body, true},
		{"rotation, old secret", old, headers([]string{cur, old}, now, body), body, true},
		{"rotation, new secret", cur, headers([]string{cur, old}, now, body), body, true},
		{"tampered body", cur, headers([]string{cur}, now, body), append([]byte{' '}, body...), false},
		{"other secret", other, headers([]string{cur}, now, body), body, false},
		{"stale timestamp", cur, headers([]string{cur}, now.Add(-time.Hour), body), body, false},
	} {
		wh, err := standardwebhooks.NewWebhook(c.secret)
		if err != nil {
			t.Fatal(err)
		}
		lib := wh.Verify(c.body, c.h) == nil
		ours := VerifySignature(c.secret, c.body, c.h) == nil
		if lib != c.ok || ours != c.ok {
			t.Errorf("%s: library %v, demo %v, want %v", c.name, lib, ours, c.ok)
		}
	}
}
