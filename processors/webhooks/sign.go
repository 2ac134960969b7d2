package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/partners-engine/partners-engine/schemas"
)

// WebhookID is the Standard Webhooks webhook-id of the delivery of event
// eventID to endpoint endpointID. It is deterministic, so every retry and
// every replay of that delivery carries the same id (and X-Idempotency-Key):
// "msg_" + the first 16 bytes of sha256(event id NUL endpoint id), hex.
func WebhookID(eventID, endpointID string) string {
	h := sha256.New()
	h.Write([]byte(eventID))
	h.Write([]byte{0})
	h.Write([]byte(endpointID))
	return "msg_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// secretKeys caches decoded secrets: decoding base64 on every delivery is
// measurable at thousands of deliveries per second. Bounded: rotated and
// removed secrets fall out.
var secretKeys = func() *lru.Cache[string, []byte] {
	c, _ := lru.New[string, []byte](4096)
	return c
}()

// ErrBadSecret is returned for a secret that is not "whsec_" + base64.
var ErrBadSecret = errors.New("webhook secret is not whsec_ + base64")

func secretKey(secret string) ([]byte, error) {
	if k, ok := secretKeys.Get(secret); ok {
		return k, nil
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(k) == 0 {
		return nil, ErrBadSecret
	}
	secretKeys.Add(secret, k)
	return k, nil
}

// Sign returns the webhook-signature header value for one attempt: one
// "v1,<base64 HMAC-SHA256(id.timestamp.body)>" per secret, space-separated.
// During a rotation every active secret signs, so receivers holding either
// the old or the new secret verify.
func Sign(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	if len(secrets) == 0 {
		return "", errors.New("endpoint has no active webhook secret")
	}
	prefix := make([]byte, 0, len(id)+24)
	prefix = append(prefix, id...)
	prefix = append(prefix, '.')
	prefix = strconv.AppendInt(prefix, ts.Unix(), 10)
	prefix = append(prefix, '.')
	var b strings.Builder
	var sum [sha256.Size]byte
	for i, s := range secrets {
		key, err := secretKey(s)
		if err != nil {
			return "", fmt.Errorf("secret %d: %w", i, err)
		}
		m := hmac.New(sha256.New, key)
		m.Write(prefix)
		m.Write(body)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(m.Sum(sum[:0])))
	}
	return b.String(), nil
}

// activeSecrets returns the endpoint's secrets valid at t, newest first.
func activeSecrets(ep schemas.Endpoint, t time.Time) []string {
	as := ep.ActiveSecrets(t)
	out := make([]string, len(as))
	for i, s := range as {
		out[i] = s.Secret
	}
	return out
}
