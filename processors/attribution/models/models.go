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
	"sort"
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
	sum := map[string]decimal.Decimal{}
	for i, t := range eligible {
		if per[i].IsZero() {
			per[i] = decimal.Zero
		}
		sum[t.PartnerID] = sum[t.PartnerID].Add(per[i])
	}
	out := make([]Weight, 0, len(sum))
	for pid, w := range sum {
		out = append(out, Weight{PartnerID: pid, W: w})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PartnerID < out[j].PartnerID })
	return out, nil
}

// Split divides total into len(weights) shares with places decimal places
// by largest remainder (see the package doc). The shares sum to total
// rounded to places; Split(−x) is the negation of Split(x).
func Split(total decimal.Decimal, weights []Weight, places int32) []decimal.Decimal {
	out := make([]decimal.Decimal, len(weights))
	var wsum decimal.Decimal
	for _, w := range weights {
		wsum = wsum.Add(w.W)
	}
	if len(weights) == 0 || !wsum.IsPositive() {
		for i := range out {
			out[i] = decimal.Zero
		}
		return out
	}
	neg := total.IsNegative()
	abs := total.Abs().Round(places)
	unit := decimal.New(1, -places)
	type rem struct {
		i int
		r decimal.Decimal
	}
	rems := make([]rem, len(weights))
	allocated := decimal.Zero
	for i, w := range weights {
		raw := abs.Mul(w.W).DivRound(wsum, 24)
		tr := raw.Truncate(places)
		out[i] = tr
		allocated = allocated.Add(tr)
		rems[i] = rem{i: i, r: raw.Sub(tr)}
	}
	left := abs.Sub(allocated).Div(unit).IntPart()
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r.GreaterThan(rems[b].r) })
	for k := int64(0); k < left && len(rems) > 0; k++ {
		j := rems[int(k)%len(rems)].i
		out[j] = out[j].Add(unit)
	}
	if neg {
		for i := range out {
			out[i] = out[i].Neg()
		}
	}
	return out
}

// ToBase converts amount in a currency to the base currency with rate (base
// units per unit of the currency), rounded half away from zero to cents.
func ToBase(amount, rate decimal.Decimal) decimal.Decimal {
	return amount.Mul(rate).Round(2)
}
