// Package jwks owns the enterprise tenants' JSON Web Token contract shared by
// the control plane (which validates a tenant's JWT configuration when it is
// written) and the edge plugin (which enforces it on every request): parsing
// a tenant's JWKS (RSA keys only), checking a tenant's JWT configuration, and
// verifying RS256 compact JWTs against it with issuer, audience and time
// checks. The plugin, not Envoy, verifies the JWT, because only it knows the
// tenant the request's API key belongs to (see edge/README.md).
package jwks

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/schemas"
)

// ParseConfig checks an enterprise tenant's JWT configuration: an issuer
// and a JWKS with at least one usable RS256 key. It returns the keys.
func ParseConfig(c *schemas.JWTConfig) (Keys, error) {
	if c == nil {
		return nil, errors.New("no jwt configuration")
	}
	if strings.TrimSpace(c.Issuer) == "" {
		return nil, errors.New("issuer is empty")
	}
	for i, a := range c.Audiences {
		if strings.TrimSpace(a) == "" {
			return nil, fmt.Errorf("audiences[%d] is empty", i)
		}
	}
	return Parse([]byte(c.JWKS))
}

// Errors a caller maps to answers.
var (
	ErrMalformed = errors.New("malformed JWT")
	ErrInvalid   = errors.New("invalid JWT")
)

// Keys are the RSA public keys of a JWKS by kid ("" for a key without one).
type Keys map[string]*rsa.PublicKey

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// Parse parses a JWKS document holding at least one RSA key usable for
// RS256 signatures.
func Parse(doc []byte) (Keys, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("jwks is not JSON: %w", err)
	}
	out := Keys{}
	for i, k := range set.Keys {
		if k.Kty != "RSA" || (k.Alg != "" && k.Alg != "RS256") || (k.Use != "" && k.Use != "sig") {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("jwks key %d: n must be a base64url modulus of at least 2048 bits and e a small exponent", i)
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return nil, fmt.Errorf("jwks key %d: invalid exponent", i)
		}
		out[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	}
	if len(out) == 0 {
		return nil, errors.New("jwks has no RSA signing key for RS256")
	}
	return out, nil
}

// Claims are the registered claims the edge checks, plus the subject.
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  audience `json:"aud"`
	ExpiresAt int64    `json:"exp"`
	NotBefore int64    `json:"nbf"`
	IssuedAt  int64    `json:"iat"`
}

// audience is "aud": a string or a list of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// Expect is what a token must satisfy.
type Expect struct {
	Issuer    string
	Audiences []string // empty: any audience
	Now       time.Time
	Leeway    time.Duration
}

// MaxTokenBytes bounds the token accepted for verification.
const MaxTokenBytes = 8 << 10

// Verify checks an RS256 compact JWT against keys and exp. It returns the
// claims of a valid token; errors wrap ErrMalformed or ErrInvalid and never
// quote the token.
func Verify(token string, keys Keys, exp Expect) (*Claims, error) {
	if len(token) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not three dot-separated parts", ErrMalformed)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, fmt.Errorf("%w: header is not JSON", ErrMalformed)
	}
	if hdr.Alg != "RS256" {
		return nil, fmt.Errorf("%w: alg %q is not RS256", ErrInvalid, hdr.Alg)
	}
	key, ok := keys[hdr.Kid]
	if !ok && hdr.Kid == "" && len(keys) == 1 {
		for _, k := range keys {
			key, ok = k, true
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: unknown key id", ErrInvalid)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return nil, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	var c Claims
	if err := json.Unmarshal(pb, &c); err != nil {
		return nil, fmt.Errorf("%w: payload claims are not valid JSON", ErrMalformed)
	}
	now := exp.Now.Unix()
	leeway := int64(exp.Leeway / time.Second)
	switch {
	case c.Issuer != exp.Issuer:
		return nil, fmt.Errorf("%w: issuer does not match the tenant's", ErrInvalid)
	case c.ExpiresAt == 0:
		return nil, fmt.Errorf("%w: no exp claim", ErrInvalid)
	case now > c.ExpiresAt+leeway:
		return nil, fmt.Errorf("%w: expired", ErrInvalid)
	case c.NotBefore != 0 && now+leeway < c.NotBefore:
		return nil, fmt.Errorf("%w: not valid yet", ErrInvalid)
	}
	if len(exp.Audiences) > 0 && !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(exp.Audiences, a) }) {
		return nil, fmt.Errorf("%w: audience not accepted", ErrInvalid)
	}
	return &c, nil
}

// Sign returns an RS256 compact JWT of claims with kid, for tests and the
// demo tooling that play an enterprise partner.
func Sign(key *rsa.PrivateKey, kid string, claims any) (string, error) {
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	p, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Document returns the JWKS document of a public key.
func Document(pub *rsa.PublicKey, kid string) string {
	return Keys{kid: pub}.Document()
}

// Document returns the keys as a JWKS document restricted to RS256: exactly
// the algorithm the plugin checks, whatever else a tenant's JWKS held.
func (k Keys) Document() string {
	kids := make([]string, 0, len(k))
	for kid := range k {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	keys := make([]map[string]string, 0, len(k))
	for _, kid := range kids {
		pub := k[kid]
		m := map[string]string{
			"kty": "RSA", "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		}
		if kid != "" {
			m["kid"] = kid
		}
		keys = append(keys, m)
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return string(b)
}
