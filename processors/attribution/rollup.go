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
	revenue, conversions, newCustomers, cost money
	customers, leads, attributions, costs    int64
}

func (v *rollVal) zero() bool {
	return v.revenue.zero() && v.conversions.zero() && v.newCustomers.zero() && v.cost.zero() &&
		v.customers == 0 && v.leads == 0 && v.attributions == 0 && v.costs == 0
}

// money is a sum of decimals: in machine words at the rollup's scale
// (10^−4, every amount and credit the processor computes), with a decimal
// for whatever does not fit one (more places, or beyond int64) — so adding
// an attribution row costs no big.Int arithmetic and stays exact.
type money struct {
	u int64           // units of 10^−4
	d decimal.Decimal // the rest
}

const moneyPlaces = 4

// add adds sign·x.
func (m *money) add(x decimal.Decimal, sign int64) {
	if exp := x.Exponent(); exp <= 0 && exp >= -moneyPlaces && x.NumDigits() <= 14 {
		// |coefficient| < 10^14 and ≤ 4 shifts: |v| < 10^18, no overflow.
		v := x.CoefficientInt64()
		for e := moneyPlaces + exp; e > 0; e-- {
			v *= 10
		}
		if s := m.u + sign*v; (s > m.u) == (sign*v > 0) || sign*v == 0 {
			m.u = s
			return
		}
	}
	if sign < 0 {
		x = x.Neg()
	}
	m.d = m.d.Add(x)
}

func (m money) zero() bool {
	if m.d.IsZero() {
		return m.u == 0
	}
	return m.dec().IsZero()
}

// dec is the sum as a decimal.
func (m money) dec() decimal.Decimal {
	v := decimal.New(m.u, -moneyPlaces)
	if !m.d.IsZero() {
		v = v.Add(m.d)
	}
	return v
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
		v.revenue.add(a.Revenue, 1)
		v.conversions.add(a.Credit, 1)
		v.newCustomers.add(a.NewCustomer, 1)
		if !had {
			v.attributions++
			continue
		}
		v.revenue.add(o.Revenue, -1)
		v.conversions.add(o.Credit, -1)
		v.newCustomers.add(o.NewCustomer, -1)
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
		v.cost.add(c.AmountBase, 1)
		v.costs++
	}
}

// addLeads adds the change of a user's lead entries (per partner, the days
// of a touch) from old to cur, for the partners that got a touch.
func (r rollup) addLeads(sc *scratch, old, cur *history, partners map[string]bool) {
	for partner := range partners {
		sc.a, sc.b = touchDays(sc.a[:0], old, partner), touchDays(sc.b[:0], cur, partner)
		sc.diff(func(d, prev day, n int64) {
			for _, m := range models.All {
				r.at(rollKey{model: m, day: d, partner: partner, prev: prev}).leads += n
			}
		})
	}
}

// addCustomers adds the change of a user's customer entries (per model and
// partner, the days of a credited non-refund conversion) from old to cur,
// for the (model, partner) pairs whose credit changed.
func (r rollup) addCustomers(sc *scratch, old, cur *history, pairs map[modelPartner]bool) {
	for mp := range pairs {
		sc.a, sc.b = customerDays(sc.a[:0], old, mp), customerDays(sc.b[:0], cur, mp)
		sc.diff(func(d, prev day, n int64) {
			r.at(rollKey{model: mp.model, day: d, partner: mp.partner, prev: prev}).customers += n
		})
	}
}

// scratch holds the day lists of addLeads and addCustomers between users
// (a batch computes thousands; none outlives its call).
type scratch struct {
	a, b   []day
	ea, eb [][2]day
}

// diff is diffEntries of the day lists a (old) and b (cur), in place.
func (sc *scratch) diff(add func(d, prev day, n int64)) {
	sc.ea, sc.eb = entriesInto(sc.ea[:0], sc.a), entriesInto(sc.eb[:0], sc.b)
	diffSorted(sc.ea, sc.eb, add)
}

func touchDays(out []day, h *history, partner string) []day {
	for _, t := range h.touches {
		if t.PartnerID == partner {
			out = append(out, dayOf(t.At))
		}
	}
	return out
}

func customerDays(out []day, h *history, mp modelPartner) []day {
	for _, s := range h.attrs {
		for i := range s.rows {
			if a := &s.rows[i]; a.Model == mp.model && a.PartnerID == mp.partner && customer(a) {
				out = append(out, dayOf(a.At))
			}
		}
	}
	return out
}

// customer reports whether an attribution row makes its user a customer of
// its partner: credited, and not a refund.
func customer(a *attrRow) bool { return a.Kind != schemas.ConversionRefund && a.Credit.IsPositive() }

// diffEntries calls add(day, previous day, ±1) for every entry of the
// distinct days cur that old lacks (+1) and of old that cur lacks (−1). An
// entry is a day with the previous distinct day of the same set (0 for the
// first): the distinct members of a window [a, b] are the entries with
// a ≤ day ≤ b and previous day < a.
func diffEntries(old, cur []day, add func(d, prev day, n int64)) {
	diffSorted(entries(old), entries(cur), add)
}

// diffSorted is diffEntries of two sorted entry lists.
func diffSorted(o, c [][2]day, add func(d, prev day, n int64)) {
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
func entries(days []day) [][2]day { return entriesInto(nil, slices.Clone(days)) }

// entriesInto appends the entries of days to out; it sorts days in place.
func entriesInto(out [][2]day, days []day) [][2]day {
	slices.Sort(days)
	days = slices.Compact(days)
	var prev day
	for _, d := range days {
		out = append(out, [2]day{d, prev})
		prev = d
	}
	return out
}
