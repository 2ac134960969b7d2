package seal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestSealOpen(t *testing.T) {
	t.Parallel()
	old, err := New("k1", map[string][]byte{"k1": key(1)})
	if err != nil {
		t.Fatal(err)
	}
	both, err := New("k2", map[string][]byte{"k1": key(1), "k2": key(2)})
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("tn_1/ep_1/sec_1")
	s1, err := old.Seal([]byte("whsec_secret"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s1, "whsec_") || !strings.HasPrefix(s1, "v1:k1:") {
		t.Fatalf("sealed value %q", s1)
	}
	if again, _ := old.Seal([]byte("whsec_secret"), aad); again == s1 {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	if id, ok := KeyID(s1); !ok || id != "k1" {
		t.Fatalf("KeyID %q %v", id, ok)
	}
	// The old key still opens after the rotation; new values use the new key.
	if p, id, err := both.Open(s1, aad); err != nil || string(p) != "whsec_secret" || id != "k1" {
		t.Fatalf("open with the rotated keyring: %q %q %v", p, id, err)
	}
	s2, _ := both.Seal([]byte("whsec_secret"), aad)
	if !strings.HasPrefix(s2, "v1:k2:") {
		t.Fatalf("rotated keyring seals with %q", s2)
	}
	if _, _, err := old.Open(s2, aad); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a key it lacks: %v", err)
	}
	for name, c := range map[string]struct {
		v   string
		aad []byte
	}{
		"moved to another secret": {s1, []byte("tn_2/ep_1/sec_1")},
		"tampered":                {s1[:len(s1)-2] + "AA", aad},
		"truncated":               {"v1:k1:AAAA", aad},
		"not sealed":              {"whsec_secret", aad},
		"unknown version":         {"v9" + s1[2:], aad},
	} {
		if p, _, err := both.Open(c.v, c.aad); err == nil {
			t.Fatalf("%s: opened to %q", name, p)
		} else if strings.Contains(err.Error(), "whsec_") {
			t.Fatalf("%s: the error shows the plaintext", name)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		active string
		keys   map[string][]byte
	}{
		"no keys":        {"k", nil},
		"short key":      {"k", map[string][]byte{"k": key(1)[:16]}},
		"bad id":         {"a b", map[string][]byte{"a b": key(1)}},
		"unknown active": {"x", map[string][]byte{"k": key(1)}},
	} {
		if _, err := New(c.active, c.keys); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
	if _, err := ParseKey("c2hvcnQ="); err == nil {
		t.Fatal("a 5-byte key parsed")
	}
	if b, err := ParseKey("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="); err != nil || len(b) != KeySize {
		t.Fatalf("a 32-byte key: %v", err)
	}
}
