// Package seal encrypts secrets at rest: the webhook secrets in the tenants
// topic. A Keyring holds named AES-256 keys from the configuration
// (partner.keys.secret_keys); Seal always uses the active one, Open any of
// them, so keys rotate without rewriting every record at once: add a key,
// make it active, re-encrypt (`partners tenants reencrypt`), then drop the
// old key once nothing is sealed with it.
//
// A sealed value is "v1:<key id>:<base64url of nonce ‖ AES-GCM ciphertext>".
// The additional data (aad) binds it to its place (tenant, endpoint and
// secret id), so a sealed value copied elsewhere does not open. Errors never
// contain plaintext or key material.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// KeySize is the length of a key: AES-256.
const KeySize = 32

const version = "v1"

// KeyIDRe is the shape of a key id.
var KeyIDRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// Keyring holds the keys; it is safe for concurrent use.
type Keyring struct {
	active string
	aeads  map[string]cipher.AEAD
}

// ParseKey decodes a key given as standard or URL base64 of 32 bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("must be base64 of %d bytes, got %d bytes", KeySize, len(b))
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("must be base64 of %d bytes (openssl rand -base64 32)", KeySize)
}

// New returns a keyring sealing with keys[active]. keys maps key ids to
// raw 32-byte keys.
func New(active string, keys map[string][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: no keys")
	}
	k := &Keyring{active: active, aeads: map[string]cipher.AEAD{}}
	for id, raw := range keys {
		if !KeyIDRe.MatchString(id) {
			return nil, fmt.Errorf("seal: key id %q: must be 1 to 32 letters, digits, '.', '_' or '-'", id)
		}
		if len(raw) != KeySize {
			return nil, fmt.Errorf("seal: key %q: must be %d bytes, got %d", id, KeySize, len(raw))
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("seal: key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("seal: key %q: %w", id, err)
		}
		k.aeads[id] = aead
	}
	if _, ok := k.aeads[active]; !ok {
		return nil, fmt.Errorf("seal: active key %q is not among the keys (%s)", active, strings.Join(k.IDs(), ", "))
	}
	return k, nil
}

// Active is the id of the key Seal uses.
func (k *Keyring) Active() string { return k.active }

// IDs are the key ids, sorted.
func (k *Keyring) IDs() []string {
	out := make([]string, 0, len(k.aeads))
	for id := range k.aeads {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Seal encrypts plain under the active key, bound to aad.
func (k *Keyring) Seal(plain, aad []byte) (string, error) {
	aead := k.aeads[k.active]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: nonce: %w", err)
	}
	out := aead.Seal(nonce, nonce, plain, aad)
	return version + ":" + k.active + ":" + base64.RawURLEncoding.EncodeToString(out), nil
}

// KeyID returns the id of the key sealed was sealed with.
func KeyID(sealed string) (string, bool) {
	v, rest, ok := strings.Cut(sealed, ":")
	if !ok || v != version {
		return "", false
	}
	id, _, ok := strings.Cut(rest, ":")
	return id, ok && id != ""
}

// ErrUnknownKey is returned by Open for a value sealed with a key the
// keyring does not hold.
var ErrUnknownKey = errors.New("sealed with a key that is not configured")

// Open decrypts a value Seal returned, with the key it names, checking aad.
// It returns the plaintext and that key's id.
func (k *Keyring) Open(sealed string, aad []byte) ([]byte, string, error) {
	v, rest, ok := strings.Cut(sealed, ":")
	if !ok || v != version {
		return nil, "", errors.New("not a sealed value (want v1:<key id>:<data>)")
	}
	id, data, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, "", errors.New("not a sealed value (want v1:<key id>:<data>)")
	}
	aead, ok := k.aeads[id]
	if !ok {
		return nil, id, fmt.Errorf("key %q: %w", id, ErrUnknownKey)
	}
	raw, err := base64.RawURLEncoding.DecodeString(data)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, id, errors.New("sealed data is malformed")
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], aad)
	if err != nil {
		return nil, id, fmt.Errorf("key %q does not open it (wrong key or moved value)", id)
	}
	return plain, id, nil
}
