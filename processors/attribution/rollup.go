package attribution

import (
	"slices"
	"time"

	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
)

// A batch's effect on roi_daily is a set of correction rows: for every key
// the difference between what the rollup holds after the batch and before
// it. Summed over all batches, the corrections of a key are exactly the
// figures of the committed records (see schemas/clickhouse/README.md):
//
//   - money (prev_day 0): revenue, conversions and new-customer credit of
//     the attribution rows of a (model, day, partner), and the number of
//     such rows; cost and cost records of a (day, partner), under every model;
//   - entries (prev_day = the previous day of the same user in the same set,
//     0 for the first): customers per (model, partner) — the days of a
//     credited non-refund conversion — and leads per partner — the days of a
//     touch, under every model.

// day is a UTC day as days since 1970-01-01, ClickHouse's Date.
type day int32

func dayOf(t time.Time) day {
	s := t.Unix()
	if s < 0 {
		return 0
	}
	return day(s / 86400)
}

func (d day) time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

type rollKey struct {
	model   string
	day     day
	partner string
	prev    day
}

type rollVal struct {
	revenue, conversions, newCustomers, cost decimal.Decimal
	customers, leads, attributions, costs    int64
}

func (v *rollVal) zero() bool {
	return v.revenue.IsZero() && v.conversions.IsZero() && v.newCustomers.IsZero() && v.cost.IsZero() &&
		v.customers == 0 && v.leads == 0 && v.attributions == 0 && v.costs == 0
}

type rollup map[rollKey]*rollVal

func (r rollup) at(k rollKey) *rollVal {
	v := r[k]
	if v == nil {
		v = &rollVal{}
		r[k] = v
	}
	return v
}

type modelPartner struct{ model, partner string }

// addSplit adds the correction from a conversion's old attribution (nil:
// unattributed) to its new one. Every (model, partner) of the old split is
// in the new one: touches are only ever added, so a partner never leaves
// the eligible set (attribute keeps it, at zero, if one did).
func (r rollup) addSplit(old, cur *split) {
	for _, a := range cur.rows {
		o, had := old.row(a.Model, a.PartnerID)
		if had && o.Revenue.Equal(a.Revenue) && o.Credit.Equal(a.Credit) && o.NewCustomer.Equal(a.NewCustomer) {
			continue
		}
		v := r.at(rollKey{model: a.Model, day: dayOf(a.At), partner: a.PartnerID})
		if !had {
			v.revenue = v.revenue.Add(a.Revenue)
			v.conversions = v.conversions.Add(a.Credit)
			v.newCustomers = v.newCustomers.Add(a.NewCustomer)
			v.attributions++
			continue
		}
		v.revenue = v.revenue.Add(a.Revenue.Sub(o.Revenue))
		v.conversions = v.conversions.Add(a.Credit.Sub(o.Credit))
		v.newCustomers = v.newCustomers.Add(a.NewCustomer.Sub(o.NewCustomer))
	}
}

// row returns the split's row of (model, partner); a split has a row per
// model and eligible partner, a handful, so a scan beats a map. A nil split
// (unattributed) has none.
func (s *split) row(model, partner string) (attrRow, bool) {
	if s == nil {
		return attrRow{}, false
	}
	for _, a := range s.rows {
		if a.Model == model && a.PartnerID == partner {
			return a, true
		}
	}
	return attrRow{}, false
}

// addCost counts a new cost record under every model.
func (r rollup) addCost(c cost) {
	d := dayOf(c.OccurredAt)
	for _, m := range models.All {
		v := r.at(rollKey{model: m, day: d, partner: c.PartnerID})
		v.cost = v.cost.Add(c.AmountBase)
		v.costs++
	}
}

// addLeads adds the change of a user's lead entries (per partner, the days
// of a touch) from old to cur, for the partners that got a touch.
func (r rollup) addLeads(old, cur *history, partners map[string]bool) {
	for partner := range partners {
		diffEntries(touchDays(old, partner), touchDays(cur, partner), func(d, prev day, n int64) {
			for _, m := range models.All {
				r.at(rollKey{model: m, day: d, partner: partner, prev: prev}).leads += n
			}
		})
	}
}

// addCustomers adds the change of a user's customer entries (per model and
// partner, the days of a credited non-refund conversion) from old to cur,
// for the (model, partner) pairs whose credit changed.
func (r rollup) addCustomers(old, cur *history, pairs map[modelPartner]bool) {
	for mp := range pairs {
		diffEntries(customerDays(old, mp), customerDays(cur, mp), func(d, prev day, n int64) {
			r.at(rollKey{model: mp.model, day: d, partner: mp.partner, prev: prev}).customers += n
		})
	}
}

func touchDays(h *history, partner string) []day {
	var out []day
	for _, t := range h.touches {
		if t.PartnerID == partner {
			out = append(out, dayOf(t.At))
		}
	}
	return out
}

func customerDays(h *history, mp modelPartner) []day {
	var out []day
	for _, s := range h.attrs {
		for _, a := range s.rows {
			if a.Model == mp.model && a.PartnerID == mp.partner && customer(a) {
				out = append(out, dayOf(a.At))
			}
		}
	}
	return out
}

// customer reports whether an attribution row makes its user a customer of
// its partner: credited, and not a refund.
func customer(a attrRow) bool { return a.Kind != schemas.ConversionRefund && a.Credit.IsPositive() }

// diffEntries calls add(day, previous day, ±1) for every entry of the
// distinct days cur that old lacks (+1) and of old that cur lacks (−1). An
// entry is a day with the previous distinct day of the same set (0 for the
// first): the distinct members of a window [a, b] are the entries with
// a ≤ day ≤ b and previous day < a.
func diffEntries(old, cur []day, add func(d, prev day, n int64)) {
	o, c := entries(old), entries(cur)
	i, j := 0, 0
	for i < len(o) || j < len(c) {
		switch {
		case j == len(c) || (i < len(o) && less(o[i], c[j])):
			add(o[i][0], o[i][1], -1)
			i++
		case i == len(o) || less(c[j], o[i]):
			add(c[j][0], c[j][1], 1)
			j++
		default:
			i++
			j++
		}
	}
}

func less(a, b [2]day) bool { return a[0] < b[0] || (a[0] == b[0] && a[1] < b[1]) }

// entries returns the entries of days, sorted.
func entries(days []day) [][2]day {
	ds := slices.Clone(days)
	slices.Sort(ds)
	ds = slices.Compact(ds)
	out := make([][2]day, len(ds))
	var prev day
	for i, d := range ds {
		out[i] = [2]day{d, prev}
		prev = d
	}
	return out
}
