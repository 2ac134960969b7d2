// Package models owns the attribution math of partners-engine: which partners
// get credit for a conversion under each attribution model, and how an amount
// is split between them to the cent. It is pure (no I/O, no clock), so the
// processor, the oracle tests and the analysts' documentation agree on one
// definition.
//
// Rules, in order:
//
//  1. Eligible touches: the user's touches with
//     conversion.at − lookback ≤ touch.at ≤ conversion.at, ordered by
//     (occurred_at, id). None: the conversion is unattributed.
//  2. Per-touch weights by model: first_touch / last_touch 1 for the
//     first / last touch; linear 1 each; time_decay 2^(−age/half_life) with
//     age = conversion.at − touch.at (rounded to 12 decimal places);
//     position_based 1 touch 100 %, 2 touches 50/50, n ≥ 3: 40 % first,
//     40 % last, 20 % shared equally by the middle ones.
//  3. Weights are summed per partner; partners are ordered by partner id.
//     Every partner that touched the user in the window gets a share, zero
//     included (a zero row overwrites an earlier, larger credit when a late
//     touch re-attributes a conversion).
//  4. Split: a total is divided to a fixed number of decimal places
//     (cents for money, 4 places for conversion credit) by largest
//     remainder: each share is total·w/Σw truncated toward zero, the units
//     left over go one each to the largest truncated remainders, ties to the
//     earlier partner. Shares always sum exactly to the total and a negative
//     total is split as the exact negation of the positive one, so a full
//     refund reverses its conversion to the cent.
package models

import (
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Model names.
const (
	FirstTouch    = "first_touch"
	LastTouch     = "last_touch"
	Linear        = "linear"
	TimeDecay     = "time_decay"
	PositionBased = "position_based"
)

// All lists every model, in documentation order.
var All = []string{FirstTouch, LastTouch, Linear, TimeDecay, PositionBased}

// Valid reports whether m names a model.
func Valid(m string) bool {
	for _, x := range All {
		if x == m {
			return true
		}
	}
	return false
}

// Touch is one touchpoint as the models see it.
type Touch struct {
	ID        string
	PartnerID string
	At        time.Time
}

// Params are the configured model parameters.
type Params struct {
	Lookback time.Duration
	HalfLife time.Duration // time_decay
}

// Weight is the weight of one partner for one conversion under one model.
type Weight struct {
	PartnerID string
	W         decimal.Decimal
}

// Eligible returns the touches inside the lookback window of a conversion at
// at, ordered by (occurred_at, id), without duplicate ids.
func Eligible(touches []Touch, at time.Time, lookback time.Duration) []Touch {
	from := at.Add(-lookback)
	seen := make(map[string]bool, len(touches))
	var out []Touch
	for _, t := range touches {
		if t.At.Before(from) || t.At.After(at) || seen[t.ID] {
			continue
		}
		seen[t.ID] = true
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.Before(out[j].At)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Weights returns the per-partner weights (relative: only their ratios
// matter) of model for a conversion at at,
// given eligible touches (as returned by Eligible). Every partner of the
// touches appears, ordered by partner id.
func Weights(model string, eligible []Touch, at time.Time, p Params) ([]Weight, error) {
	n := len(eligible)
	per := make([]decimal.Decimal, n)
	switch model {
	case FirstTouch:
		if n > 0 {
			per[0] = decimal.NewFromInt(1)
		}
	case LastTouch:
		if n > 0 {
			per[n-1] = decimal.NewFromInt(1)
		}
	case Linear:
		for i := range per {
			per[i] = decimal.NewFromInt(1)
		}
	case TimeDecay:
		hl := p.HalfLife.Seconds()
		if hl <= 0 {
			return nil, fmt.Errorf("time_decay: half-life must be > 0")
		}
		for i, t := range eligible {
			age := at.Sub(t.At).Seconds()
			per[i] = decimal.NewFromFloat(math.Exp2(-age / hl)).Round(12)
		}
	case PositionBased:
		// Integer weights in the exact 40/20/40 proportions (2(n−2) : 1 … 1 :
		// 2(n−2)): no rounded fraction like 0.2/3 ever enters the split.
		switch {
		case n == 1:
			per[0] = decimal.NewFromInt(1)
		case n == 2:
			per[0], per[1] = decimal.NewFromInt(1), decimal.NewFromInt(1)
		case n >= 3:
			per[0], per[n-1] = decimal.NewFromInt(int64(2*(n-2))), decimal.NewFromInt(int64(2*(n-2)))
			for i := 1; i < n-1; i++ {
				per[i] = decimal.NewFromInt(1)
			}
		}
	default:
		return nil, fmt.Errorf("unknown attribution model %q", model)
	}
	// Summed per partner: a handful of partners, so a scan of out beats a
	// map (a map for many touches); a partner's first weight is taken as
	// is, only further ones are added.
	var index map[string]int
	if n > 32 {
		index = make(map[string]int)
	}
	out := make([]Weight, 0, min(n, 8))
	for i, t := range eligible {
		w := per[i]
		if w.IsZero() {
			w = decimal.Zero
		}
		j := -1
		if index != nil {
			if k, ok := index[t.PartnerID]; ok {
				j = k
			}
		} else {
			j = slices.IndexFunc(out, func(x Weight) bool { return x.PartnerID == t.PartnerID })
		}
		if j < 0 {
			if index != nil {
				index[t.PartnerID] = len(out)
			}
			out = append(out, Weight{PartnerID: t.PartnerID, W: w})
			continue
		}
		out[j].W = out[j].W.Add(w)
	}
	slices.SortFunc(out, func(a, b Weight) int { return strings.Compare(a.PartnerID, b.PartnerID) })
	return out, nil
}

// Split divides total into len(weights) shares with places decimal places
// by largest remainder (see the package doc), exactly: the weights are
// taken as integers at one scale, each share is ⌊units·w/Σw⌋ and its
// remainder (units·w mod Σw) is compared as an integer. The shares sum to
// total rounded to places; Split(−x) is the negation of Split(x).
func Split(total decimal.Decimal, weights []Weight, places int32) []decimal.Decimal {
	out := make([]decimal.Decimal, len(weights))
	neg := total.IsNegative()
	if u, ok := unitsUint64(total, places); ok && len(weights) <= 64 {
		var q [64]uint64
		if zero, ok := splitUint64(u, weights, q[:len(weights)]); ok {
			for i := range out {
				if zero {
					out[i] = decimal.Zero
					continue
				}
				v := int64(q[i]) // ≤ u < 2^63
				if neg {
					v = -v
				}
				out[i] = decimal.New(v, -places)
			}
			return out
		}
	}
	units := total.Abs().Round(places).Shift(places).BigInt()
	q := splitBig(units, weights)
	for i := range out {
		if q == nil {
			out[i] = decimal.Zero
			continue
		}
		v := q[i]
		if neg {
			v.Neg(v)
		}
		out[i] = decimal.NewFromBigInt(v, -places)
	}
	return out
}

// unitsUint64 is |total| in units of 10^−places when that is exact without
// rounding and below 2^63 (every real amount): no big.Int arithmetic.
func unitsUint64(total decimal.Decimal, places int32) (uint64, bool) {
	exp := total.Exponent()
	if exp > 0 || -exp > places || total.NumDigits() > 18 {
		return 0, false
	}
	c := total.CoefficientInt64()
	if c < 0 {
		c = -c
	}
	u := uint64(c)
	for e := places + exp; e > 0; e-- {
		hi, lo := bits.Mul64(u, 10)
		if hi != 0 || lo >= 1<<63 {
			return 0, false
		}
		u = lo
	}
	return u, true
}

// scaledWeights returns the weights as integers at one scale (10^k with k
// the most decimal places of any weight), or nil when they are not all ≥ 0
// or sum to 0.
func scaledWeights(weights []Weight) ([]*big.Int, *big.Int) {
	k := int32(0)
	for _, w := range weights {
		if e := -w.W.Exponent(); e > k {
			k = e
		}
	}
	ws := make([]*big.Int, len(weights))
	sum := new(big.Int)
	for i, w := range weights {
		c := new(big.Int).Set(w.W.Coefficient())
		if c.Sign() < 0 {
			return nil, nil
		}
		c.Mul(c, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(k+w.W.Exponent())), nil))
		ws[i] = c
		sum.Add(sum, c)
	}
	if len(ws) == 0 || sum.Sign() <= 0 {
		return nil, nil
	}
	return ws, sum
}

// splitBig is the largest-remainder split of units over weights; nil when
// the weights sum to 0 (every share 0).
func splitBig(units *big.Int, weights []Weight) []*big.Int {
	ws, sum := scaledWeights(weights)
	if ws == nil {
		return nil
	}
	q := make([]*big.Int, len(ws))
	r := make([]*big.Int, len(ws))
	given := new(big.Int)
	for i, w := range ws {
		p := new(big.Int).Mul(units, w)
		q[i], r[i] = new(big.Int).QuoRem(p, sum, new(big.Int))
		given.Add(given, q[i])
	}
	left := new(big.Int).Sub(units, given).Int64()
	order := make([]int, len(ws))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return r[order[a]].Cmp(r[order[b]]) > 0 })
	for k := int64(0); k < left; k++ {
		j := order[int(k)%len(order)]
		q[j].Add(q[j], big.NewInt(1))
	}
	return q
}

// splitUint64 is splitBig in machine words, for the common case (amounts
// below 2^63 units, weights of at most 12 decimal places whose sum fits 64
// bits: every real attribution): it fills q (len(weights) ≤ 64) with the
// shares of u; zero when the weights sum to 0 (every share 0); false when
// it does not apply.
func splitUint64(u uint64, weights []Weight, q []uint64) (zero, ok bool) {
	if len(weights) > 64 || len(q) != len(weights) {
		return false, false
	}
	k := int32(0)
	for _, w := range weights {
		if e := -w.W.Exponent(); e > k {
			k = e
		}
	}
	if k > 12 {
		return false, false
	}
	var ws [64]uint64
	var sum uint64
	for i, w := range weights {
		if w.W.IsNegative() || w.W.NumDigits() > 18 {
			return false, false
		}
		v := uint64(w.W.CoefficientInt64())
		for e := k + w.W.Exponent(); e > 0; e-- {
			hi, lo := bits.Mul64(v, 10)
			if hi != 0 {
				return false, false
			}
			v = lo
		}
		ws[i] = v
		var carry uint64
		sum, carry = bits.Add64(sum, v, 0)
		if carry != 0 {
			return false, false
		}
	}
	if sum == 0 {
		return true, true
	}
	n := len(weights)
	var r [64]uint64
	var given uint64
	for i := range n {
		hi, lo := bits.Mul64(u, ws[i])
		if hi >= sum {
			return false, false
		}
		q[i], r[i] = bits.Div64(hi, lo, sum)
		given += q[i]
	}
	left := u - given
	var order [64]int
	for i := range n {
		order[i] = i
	}
	// Stable insertion sort by remainder, largest first (ties: lower index).
	for i := 1; i < n; i++ {
		for j := i; j > 0 && r[order[j]] > r[order[j-1]]; j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	for k := uint64(0); k < left; k++ {
		q[order[int(k%uint64(n))]]++
	}
	return false, true
}

// ToBase converts amount in a currency to the base currency with rate (base
// units per unit of the currency), rounded half away from zero to cents.
func ToBase(amount, rate decimal.Decimal) decimal.Decimal {
	return amount.Mul(rate).Round(2)
}
