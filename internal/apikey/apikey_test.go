package apikey_test

import (
	"strings"
	"testing"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestKeyShape(t *testing.T) {
	for _, tier := range schemas.Tiers {
		k := apikey.New(tier)
		if !apikey.LooksValid(k) {
			t.Fatalf("generated key %q... fails LooksValid", k[:10])
		}
		if len(k) != 7+43 {
			t.Fatalf("key of tier %s has %d characters, want 50", tier, len(k))
		}
	}
	for _, bad := range []string{"", "pk_sbx_", "xx_sbx_aaaaaaaaaaaaaaaaaaaaaaa", "pk_sbx_aaaaaaaaaaaaa aaaaaaaaaa", strings.Repeat("pk_sbx_a", 40)} {
		if apikey.LooksValid(bad) {
			t.Fatalf("%q accepted", bad)
		}
	}
	if apikey.Hash("p1", "k") == apikey.Hash("p2", "k") {
		t.Fatal("hash ignores the pepper")
	}
	if a, b := apikey.New("standard"), apikey.New("standard"); a == b {
		t.Fatal("two keys are equal")
	}
}

func TestEqualAndPrefix(t *testing.T) {
	h := apikey.Hash("pepper", "pk_std_abc")
	if !apikey.Equal(h, apikey.Hash("pepper", "pk_std_abc")) || apikey.Equal(h, apikey.Hash("pepper", "pk_std_abd")) || apikey.Equal(h, h[:10]) {
		t.Fatal("Equal is wrong")
	}
	if got := apikey.DisplayPrefix("pk_std_abcdefgh"); got != "pk_std_abcd" {
		t.Fatalf("DisplayPrefix = %q", got)
	}
}

func TestHasherMatchesHash(t *testing.T) {
	h := apikey.NewHasher("pepper")
	for _, k := range []string{"pk_std_a", "pk_ent_b", apikey.New("sandbox")} {
		first, again := h.Hash(k), h.Hash(k) // the pooled hasher is reset between uses
		if first != apikey.Hash("pepper", k) || again != first {
			t.Fatalf("Hasher and Hash differ for %q", k)
		}
	}
}
