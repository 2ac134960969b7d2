package attribution

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestEntriesCountWindows: the entries of a set of days count each member
// of any window once (day in the window, previous day before it).
func TestEntriesCountWindows(t *testing.T) {
	users := [][]day{{3, 5, 5, 9}, {1}, {4, 6}, {10, 11, 12}}
	for a := day(1); a <= 13; a++ { // day 0 is 1970-01-01, before any window
		for b := a; b <= 13; b++ {
			want := 0
			for _, ds := range users {
				if slices.ContainsFunc(ds, func(d day) bool { return d >= a && d <= b }) {
					want++
				}
			}
			got := 0
			for _, ds := range users {
				for _, e := range entries(ds) {
					if e[0] >= a && e[0] <= b && e[1] < a {
						got++
					}
				}
			}
			if got != want {
				t.Fatalf("window [%d, %d]: %d from entries, want %d", a, b, got, want)
			}
		}
	}
	// A late day between two others moves one entry and adds one.
	var changes []string
	diffEntries([]day{3, 9}, []day{3, 5, 9}, func(d, prev day, n int64) {
		changes = append(changes, strings.Join([]string{itoa(int(d)), itoa(int(prev)), itoa(int(n))}, "/"))
	})
	slices.Sort(changes)
	if want := []string{"5/3/1", "9/3/-1", "9/5/1"}; !slices.Equal(changes, want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestHalvesKeepOffsetOrder(t *testing.T) {
	r := func(p int32, o int64) *kgo.Record { return &kgo.Record{Topic: "t", Partition: p, Offset: o} }
	first, second := halves([]*kgo.Record{r(0, 1), r(0, 2), r(0, 3), r(1, 7)})
	if len(first) != 3 || len(second) != 1 || second[0].Offset != 3 {
		t.Fatalf("first %v second %v", first, second)
	}
	for _, f := range first {
		for _, s := range second {
			if f.Partition == s.Partition && f.Offset > s.Offset {
				t.Fatal("a partition's second half starts before its first ends")
			}
		}
	}
	first, second = halves([]*kgo.Record{r(0, 1), r(1, 7)})
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("one record per partition: first %v second %v", first, second)
	}
}

func TestCommittedAny(t *testing.T) {
	l := &ledger{ends: map[string]int64{"tp/0": 10}}
	for _, c := range []struct {
		pos  []string
		want bool
	}{
		{[]string{"/-1@-1"}, true},   // written before the ledger
		{[]string{"tp/0@9"}, true},   // below the end
		{[]string{"tp/0@10"}, false}, // a batch whose rollup insert never landed
		{[]string{"tp/1@0"}, false},  // a partition with no end yet
		{[]string{"tp/0@12", "tp/0@3"}, true},
	} {
		if got := l.committedAny(c.pos); got != c.want {
			t.Errorf("committedAny(%v) = %v, want %v", c.pos, got, c.want)
		}
	}
}

func TestDeadLetterOfCapsThePayload(t *testing.T) {
	big := &kgo.Record{Topic: "t", Partition: 2, Offset: 9, Value: []byte(`{"x":"` + strings.Repeat("y", 5000) + `"}`)}
	d := deadLetterOf(big, codeOversized, strings.Repeat("r", 5000), 1024)
	if !d.Truncated || len(d.Raw) != 1024 || d.PayloadBytes != len(big.Value) || len(d.Reason) != maxDeadReasonBytes || *d.SourceOffset != 9 {
		t.Fatalf("%+v", d)
	}
	small := &kgo.Record{Value: []byte(`{"a":1}`)}
	if d := deadLetterOf(small, codeMalformed, "bad", 1024); d.Truncated || string(d.Payload) != `{"a":1}` || d.Raw != nil {
		t.Fatalf("%+v", d)
	}
	if d := deadLetterOf(&kgo.Record{Value: []byte("not json")}, codeMalformed, "bad", 1024); string(d.Raw) != "not json" || d.Payload != nil {
		t.Fatalf("%+v", d)
	}
}

// TestAttributionIDStable: the attribution id is stored (the raw table
// de-duplicates by it across versions), so it never changes: the first 16
// bytes of SHA-256 over conversion id, model and partner id joined by NUL,
// in hex — also for ids longer than the function's stack buffer.
func TestAttributionIDStable(t *testing.T) {
	for _, c := range [][3]string{{"cv_1", "linear", "tn_a"}, {strings.Repeat("x", 300), "time_decay", strings.Repeat("p", 90)}, {"", "", ""}} {
		h := sha256.Sum256([]byte(c[0] + "\x00" + c[1] + "\x00" + c[2]))
		if got, want := AttributionID(c[0], c[1], c[2]), hex.EncodeToString(h[:16]); got != want {
			t.Fatalf("AttributionID(%.20q…) = %s, want %s", c[0], got, want)
		}
	}
}

// TestMoneyExact: the rollup's sums equal decimal arithmetic for values of
// any scale and size, the ones beyond machine words included, and sums
// that would overflow them.
func TestMoneyExact(t *testing.T) {
	var big money
	huge := decimal.New(99_999_999_999_999, 0) // 10^18 units of 10^-4
	for range 20 {
		big.add(huge, 1)
	}
	if want := huge.Mul(decimal.NewFromInt(20)); !big.dec().Equal(want) {
		t.Fatalf("20 × %v = %v, want %v", huge, big.dec(), want)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for range 2000 {
		var m money
		want := decimal.Zero
		for range 1 + r.IntN(20) {
			x := decimal.New(r.Int64N(2_000_000_000)-1_000_000_000, -int32(r.IntN(7)))
			switch r.IntN(10) {
			case 0:
				x = x.Mul(decimal.New(1, 12)) // beyond int64 at 10^-4
			case 1:
				x = decimal.New(99_999_999_999_999-r.Int64N(10), 0) // ~10^18 units: a few of them overflow int64
			}
			sign := int64(1 - 2*r.IntN(2))
			m.add(x, sign)
			want = want.Add(x.Mul(decimal.NewFromInt(sign)))
		}
		if !m.dec().Equal(want) || m.zero() != want.IsZero() {
			t.Fatalf("money sum %v (zero %v), want %v", m.dec(), m.zero(), want)
		}
	}
}
