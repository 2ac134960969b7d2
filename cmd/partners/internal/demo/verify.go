package demo

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Verifier checks a webhook request's signature with the endpoint's secret.
type Verifier func(secret string, body []byte, h http.Header) error

// Tolerance is how far a webhook-timestamp may be from now.
const Tolerance = 5 * time.Minute

// VerifySignature verifies a request as a partner would, written from the
// Standard Webhooks specification rather than from the signer's code: the
// secret is "whsec_" + base64 of the key; the signed content is
// "<webhook-id>.<webhook-timestamp>.<body>"; webhook-signature holds
// space-separated "v1,<base64 HMAC-SHA256>" entries (several during a secret
// rotation), of which one must match, compared in constant time; the
// timestamp must be within Tolerance of now.
func VerifySignature(secret string, body []byte, h http.Header) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") {
		return errors.New("secret is not whsec_<base64>")
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %w", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("webhook-timestamp %s is %v away from now", ts, d.Round(time.Second))
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}
