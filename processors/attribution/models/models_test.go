package models

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func tp(id, partner string, hoursBefore float64) Touch {
	return Touch{ID: id, PartnerID: partner, At: t0.Add(-time.Duration(hoursBefore * float64(time.Hour)))}
}

func d(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func shares(t *testing.T, model string, touches []Touch, total string, places int32, p Params) map[string]string {
	t.Helper()
	ws, err := Weights(model, Eligible(touches, t0, p.Lookback), t0, p)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for i, s := range Split(d(total), ws, places) {
		out[ws[i].PartnerID] = s.String()
	}
	return out
}

func TestModels(t *testing.T) {
	p := Params{Lookback: 30 * 24 * time.Hour, HalfLife: 7 * 24 * time.Hour}
	three := []Touch{tp("t1", "a", 72), tp("t2", "b", 48), tp("t3", "c", 24)}
	cases := []struct {
		name, model string
		touches     []Touch
		total       string
		want        map[string]string
	}{
		{"first", FirstTouch, three, "100", map[string]string{"a": "100", "b": "0", "c": "0"}},
		{"last", LastTouch, three, "100", map[string]string{"a": "0", "b": "0", "c": "100"}},
		{"linear thirds to the cent", Linear, three, "100", map[string]string{"a": "33.34", "b": "33.33", "c": "33.33"}},
		{"linear same partner twice", Linear, []Touch{tp("t1", "a", 3), tp("t2", "b", 2), tp("t3", "a", 1)}, "90", map[string]string{"a": "60", "b": "30"}},
		{"position 1 touch", PositionBased, three[:1], "10", map[string]string{"a": "10"}},
		{"position 2 touches", PositionBased, three[:2], "10", map[string]string{"a": "5", "b": "5"}},
		{"position 40/20/40", PositionBased, three, "10", map[string]string{"a": "4", "b": "2", "c": "4"}},
		{"position 4 touches", PositionBased, []Touch{tp("t1", "a", 4), tp("t2", "b", 3), tp("t3", "c", 2), tp("t4", "d", 1)}, "100", map[string]string{"a": "40", "b": "10", "c": "10", "d": "40"}},
		{"refund negates", Linear, three, "-100", map[string]string{"a": "-33.34", "b": "-33.33", "c": "-33.33"}},
		// one half-life apart: weights 1 (age 0) and 1/2 (age 7 days)
		{"time decay half-life", TimeDecay, []Touch{tp("t1", "a", 7*24), tp("t2", "b", 0)}, "90", map[string]string{"a": "30", "b": "60"}},
		{"outside lookback ignored", LastTouch, []Touch{tp("old", "z", 31*24), tp("t1", "a", 1)}, "5", map[string]string{"a": "5"}},
		{"after the conversion ignored", LastTouch, []Touch{tp("late", "z", -1), tp("t1", "a", 1)}, "5", map[string]string{"a": "5"}},
		{"lookback edge is inclusive", FirstTouch, []Touch{tp("edge", "z", 30*24), tp("t1", "a", 1)}, "5", map[string]string{"z": "5", "a": "0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := shares(t, c.model, c.touches, c.total, 2, p)
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if !d(got[k]).Equal(d(v)) {
					t.Fatalf("partner %s: got %s, want %s (all %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func TestSplitSumsExactly(t *testing.T) {
	ws := []Weight{{"a", d("1")}, {"b", d("1")}, {"c", d("1")}, {"d", d("0.000000000001")}, {"e", d("7")}}
	for _, total := range []string{"0.01", "0.07", "1", "99.99", "-13.37", "123456789.01"} {
		var sum decimal.Decimal
		pos := Split(d(total).Abs(), ws, 2)
		for i, s := range Split(d(total), ws, 2) {
			sum = sum.Add(s)
			if d(total).IsNegative() && !s.Equal(pos[i].Neg()) {
				t.Fatalf("split of %s is not the negation of the positive split: %v vs %v", total, s, pos[i])
			}
		}
		if !sum.Equal(d(total)) {
			t.Fatalf("split of %s sums to %s", total, sum)
		}
	}
	if got := Split(d("5"), nil, 2); len(got) != 0 {
		t.Fatalf("no weights: %v", got)
	}
}

func TestEligibleDedupAndOrder(t *testing.T) {
	el := Eligible([]Touch{tp("b", "p", 1), tp("a", "p", 1), tp("a", "p", 1), tp("c", "q", 2)}, t0, time.Hour*24)
	if len(el) != 3 || el[0].ID != "c" || el[1].ID != "a" || el[2].ID != "b" {
		t.Fatalf("got %+v", el)
	}
}

func TestToBaseRoundsHalfAwayFromZero(t *testing.T) {
	for _, c := range []struct{ amount, rate, want string }{
		{"10.005", "1", "10.01"}, {"-10.005", "1", "-10.01"}, {"9.99", "1.08", "10.79"}, {"0.0049", "1.27", "0.01"},
	} {
		if got := ToBase(d(c.amount), d(c.rate)); !got.Equal(d(c.want)) {
			t.Errorf("ToBase(%s, %s) = %s, want %s", c.amount, c.rate, got, c.want)
		}
	}
	if _, err := Weights("nope", nil, t0, Params{}); err == nil {
		t.Fatal("unknown model accepted")
	}
}

func BenchmarkAttributeAllModels(b *testing.B) {
	p := Params{Lookback: 30 * 24 * time.Hour, HalfLife: 7 * 24 * time.Hour}
	touches := []Touch{tp("t1", "a", 200), tp("t2", "b", 100), tp("t3", "c", 50), tp("t4", "a", 10), tp("t5", "d", 1)}
	total := d("123.45")
	for b.Loop() {
		el := Eligible(touches, t0, p.Lookback)
		for _, m := range All {
			ws, _ := Weights(m, el, t0, p)
			Split(total, ws, 2)
			Split(decimal.NewFromInt(1), ws, 4)
		}
	}
}

// TestSplitPathsAgree: the machine-word split and the big.Int one give the
// same shares, to the unit, on random amounts and weights of up to 12
// decimal places (time_decay's).
func TestSplitPathsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 20_000 {
		n := 1 + r.IntN(6)
		ws := make([]Weight, n)
		for j := range ws {
			ws[j] = Weight{PartnerID: fmt.Sprint(j), W: decimal.New(r.Int64N(1_000_000_000_000), -int32(r.IntN(13)))}
			if r.IntN(5) == 0 {
				ws[j].W = decimal.NewFromInt(r.Int64N(4))
			}
		}
		units := big.NewInt(r.Int64N(10_000_000_000_000_000))
		if i%7 == 0 {
			units = big.NewInt(r.Int64N(100))
		}
		fast := make([]uint64, len(ws))
		zero, ok := splitUint64(units.Uint64(), ws, fast)
		slow := splitBig(units, ws)
		if !ok {
			continue
		}
		if zero != (slow == nil) {
			t.Fatalf("%v over %v: fast %v (zero %v) slow %v", units, ws, fast, zero, slow)
		}
		if zero {
			continue
		}
		sum := new(big.Int)
		for j := range fast {
			if new(big.Int).SetUint64(fast[j]).Cmp(slow[j]) != 0 {
				t.Fatalf("%v over %v: share %d fast %v slow %v", units, ws, j, fast[j], slow[j])
			}
			sum.Add(sum, slow[j])
		}
		if sum.Cmp(units) != 0 {
			t.Fatalf("%v over %v: shares sum to %v", units, ws, sum)
		}
	}
}

// TestSplitMatchesBigPath: Split (machine words when the amount is exact
// in units) gives the shares of the big.Int path to the unit, for amounts
// of every scale and sign, including ones Split must round first.
func TestSplitMatchesBigPath(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 20_000 {
		n := 1 + r.IntN(5)
		ws := make([]Weight, n)
		for j := range ws {
			ws[j] = Weight{PartnerID: fmt.Sprint(j), W: decimal.New(r.Int64N(1_000_000_000_000), -int32(r.IntN(13)))}
		}
		total := decimal.New(r.Int64N(2_000_000_000)-1_000_000_000, -int32(r.IntN(7)))
		places := int32(2 + 2*r.IntN(2))
		got := Split(total, ws, places)
		units := total.Abs().Round(places).Shift(places).BigInt()
		want := splitBig(units, ws)
		for j := range got {
			w := decimal.Zero
			if want != nil {
				w = decimal.NewFromBigInt(want[j], -places)
				if total.IsNegative() {
					w = w.Neg()
				}
			}
			if !got[j].Equal(w) {
				t.Fatalf("Split(%v, %v, %d)[%d] = %v, want %v", total, ws, places, j, got[j], w)
			}
		}
	}
}

// TestWeightsSumPerPartner: the per-partner sums equal a plain map sum of
// the per-touch weights (the definition), for few and many touches.
func TestWeightsSumPerPartner(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p := Params{Lookback: 30 * 24 * time.Hour, HalfLife: 7 * 24 * time.Hour}
	for range 500 {
		n := 1 + r.IntN(60)
		var ts []Touch
		for i := range n {
			ts = append(ts, Touch{ID: fmt.Sprint("t", i), PartnerID: fmt.Sprint("p", r.IntN(1+r.IntN(40))), At: at.Add(-time.Duration(r.Int64N(int64(p.Lookback))))})
		}
		el := Eligible(ts, at, p.Lookback)
		for _, m := range All {
			ws, err := Weights(m, el, at, p)
			if err != nil {
				t.Fatal(err)
			}
			// The definition: each touch's weight alone (Weights of one
			// touch under linear is 1; under the model, its share of the
			// per-touch weights), summed per partner.
			per, err := perTouch(m, el, at, p)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]decimal.Decimal{}
			for i, tc := range el {
				want[tc.PartnerID] = want[tc.PartnerID].Add(per[i])
			}
			if len(ws) != len(want) {
				t.Fatalf("%s: %d partners, want %d", m, len(ws), len(want))
			}
			for i, w := range ws {
				if i > 0 && ws[i-1].PartnerID >= w.PartnerID {
					t.Fatalf("%s: partners not ordered: %v", m, ws)
				}
				if !w.W.Equal(want[w.PartnerID]) {
					t.Fatalf("%s: %s weighs %v, want %v", m, w.PartnerID, w.W, want[w.PartnerID])
				}
			}
		}
	}
}

// perTouch is Weights' per-touch weights, read back through Weights of
// single-partner touch lists: every touch renamed to its own partner.
func perTouch(m string, el []Touch, at time.Time, p Params) ([]decimal.Decimal, error) {
	own := make([]Touch, len(el))
	for i, t := range el {
		own[i] = Touch{ID: t.ID, PartnerID: fmt.Sprintf("%06d", i), At: t.At}
	}
	ws, err := Weights(m, own, at, p)
	if err != nil {
		return nil, err
	}
	out := make([]decimal.Decimal, len(ws))
	for i, w := range ws {
		out[i] = w.W
	}
	return out, nil
}
