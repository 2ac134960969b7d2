package jwks_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	jwt "github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestVerify(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := jwt.Parse([]byte(jwt.Document(&k.PublicKey, "k1")))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	exp := jwt.Expect{Issuer: "https://idp", Audiences: []string{"api"}, Now: now, Leeway: 30 * time.Second}
	sign := func(c map[string]any) string {
		s, err := jwt.Sign(k, "k1", c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(map[string]any{"iss": "https://idp", "aud": []string{"x", "api"}, "exp": now.Unix() + 60, "sub": "s"})
	c, err := jwt.Verify(good, keys, exp)
	if err != nil || c.Subject != "s" {
		t.Fatalf("good token: %v %v", c, err)
	}
	parts := strings.Split(good, ".")
	cases := map[string]struct {
		tok  string
		want error
	}{
		"two parts":      {parts[0] + "." + parts[1], jwt.ErrMalformed},
		"tampered":       {parts[0] + "." + sign(map[string]any{"iss": "https://idp", "aud": "api", "exp": now.Unix() + 999})[len(parts[0])+1:len(parts[0])+1+10] + parts[1][10:] + "." + parts[2], jwt.ErrInvalid},
		"alg none":       {"eyJhbGciOiJub25lIn0." + parts[1] + ".", jwt.ErrInvalid},
		"expired":        {sign(map[string]any{"iss": "https://idp", "aud": "api", "exp": now.Unix() - 31}), jwt.ErrInvalid},
		"in leeway":      {sign(map[string]any{"iss": "https://idp", "aud": "api", "exp": now.Unix() - 10}), nil},
		"no exp":         {sign(map[string]any{"iss": "https://idp", "aud": "api"}), jwt.ErrInvalid},
		"not yet":        {sign(map[string]any{"iss": "https://idp", "aud": "api", "exp": now.Unix() + 99, "nbf": now.Unix() + 60}), jwt.ErrInvalid},
		"other audience": {sign(map[string]any{"iss": "https://idp", "aud": "web", "exp": now.Unix() + 60}), jwt.ErrInvalid},
		"other issuer":   {sign(map[string]any{"iss": "https://evil", "aud": "api", "exp": now.Unix() + 60}), jwt.ErrInvalid},
		"huge":           {strings.Repeat("a", jwt.MaxTokenBytes+1), jwt.ErrMalformed},
	}
	for name, c := range cases {
		_, err := jwt.Verify(c.tok, keys, exp)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
}

func TestParseJWKSRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":   "{",
		"no keys":    `{"keys":[]}`,
		"only oct":   `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`,
		"short n":    `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		"wrong alg":  `{"keys":[{"kty":"RSA","alg":"RS512","n":"AQAB","e":"AQAB"}]}`,
		"bad base64": `{"keys":[{"kty":"RSA","n":"!!!","e":"AQAB"}]}`,
	} {
		if _, err := jwt.Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJWKSKeepsOnlyRS256(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	mixed := strings.Replace(jwt.Document(&k.PublicKey, "k1"), `{"keys":[`, `{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"ec"},`, 1)
	keys, err := jwt.Parse([]byte(mixed))
	if err != nil {
		t.Fatal(err)
	}
	out := keys.Document()
	if strings.Contains(out, `"kty":"EC"`) || strings.Contains(out, `"kid":"ec"`) || !strings.Contains(out, `"kid":"k1"`) || !strings.Contains(out, `"alg":"RS256"`) {
		t.Fatalf("sanitized JWKS = %s", out)
	}
	again, err := jwt.Parse([]byte(out))
	if err != nil || again["k1"].N.Cmp(k.PublicKey.N) != 0 {
		t.Fatalf("round trip: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	doc := jwt.Document(&k.PublicKey, "k1")
	if _, err := jwt.ParseConfig(&schemas.JWTConfig{Issuer: "https://idp", Audiences: []string{"api"}, JWKS: doc}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*schemas.JWTConfig{
		"nil":            nil,
		"no issuer":      {JWKS: doc},
		"blank audience": {Issuer: "https://idp", Audiences: []string{" "}, JWKS: doc},
		"bad jwks":       {Issuer: "https://idp", JWKS: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`},
	} {
		if _, err := jwt.ParseConfig(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
