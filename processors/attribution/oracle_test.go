package attribution_test

// The oracle computes the expected ROI inputs and metrics of a dataset
// independently of the processor, the models package and ClickHouse: exact
// rational arithmetic (math/big), its own eligibility, weights, largest-
// remainder split and rounding, written from the rules in
// schemas/clickhouse/README.md.

import (
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"time"

	"github.com/partners-engine/partners-engine/schemas"
)

type oracleKey struct{ partner, model string }

type oracleTotals struct {
	revenue, credit, newCust *big.Rat
	customers                map[string]bool
}

type oracleResult struct {
	attr  map[oracleKey]*oracleTotals
	cost  map[string]*big.Rat
	leads map[string]map[string]bool
}

var oracleModels = []string{"first_touch", "last_touch", "linear", "time_decay", "position_based"}

func rat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic("bad rational " + s)
	}
	return r
}

// roundAway rounds r to places decimals, half away from zero.
func roundAway(r *big.Rat, places int) *big.Rat {
	scale := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(places)), nil))
	x := new(big.Rat).Mul(r, scale)
	neg := x.Sign() < 0
	x.Abs(x)
	x.Add(x, big.NewRat(1, 2))
	q := new(big.Int).Quo(x.Num(), x.Denom())
	if neg {
		q.Neg(q)
	}
	return new(big.Rat).Quo(new(big.Rat).SetInt(q), scale)
}

// truncAbs truncates a non-negative r to places decimals, as an integer count of units.
func units(r *big.Rat, places int) *big.Int {
	scale := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(places)), nil)
	x := new(big.Rat).Mul(r, new(big.Rat).SetInt(scale))
	return new(big.Int).Quo(x.Num(), x.Denom())
}

// split divides total over weights (ordered partners) by largest remainder.
func split(total *big.Rat, w []*big.Rat, places int) []*big.Rat {
	out := make([]*big.Rat, len(w))
	sum := new(big.Rat)
	for _, x := range w {
		sum.Add(sum, x)
	}
	scale := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(places)), nil))
	abs := roundAway(new(big.Rat).Abs(total), places)
	totalUnits := units(abs, places)
	type rem struct {
		i int
		r *big.Rat
	}
	var rems []rem
	given := new(big.Int)
	us := make([]*big.Int, len(w))
	for i, x := range w {
		exact := new(big.Rat).Quo(new(big.Rat).Mul(abs, x), sum)
		u := units(exact, places)
		us[i] = u
		given.Add(given, u)
		r := new(big.Rat).Sub(new(big.Rat).Mul(exact, scale), new(big.Rat).SetInt(u))
		rems = append(rems, rem{i, r})
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r.Cmp(rems[b].r) > 0 })
	left := new(big.Int).Sub(totalUnits, given).Int64()
	for k := int64(0); k < left; k++ {
		j := rems[int(k)%len(rems)].i
		us[j].Add(us[j], big.NewInt(1))
	}
	for i, u := range us {
		out[i] = new(big.Rat).Quo(new(big.Rat).SetInt(u), scale)
		if total.Sign() < 0 {
			out[i].Neg(out[i])
		}
	}
	return out
}

func oracle(d Dataset, rates map[string]string, lookback, halfLife time.Duration, from, to string) *oracleResult {
	res := &oracleResult{attr: map[oracleKey]*oracleTotals{}, cost: map[string]*big.Rat{}, leads: map[string]map[string]bool{}}
	inWindow := func(t time.Time) bool {
		day := t.UTC().Format(time.DateOnly)
		return day >= from && day <= to
	}
	base := func(amount, cur string) *big.Rat {
		return roundAway(new(big.Rat).Mul(rat(amount), rat(rates[cur])), 2)
	}
	byUser := map[string][]schemas.Touchpoint{}
	for _, t := range d.Touchpoints {
		byUser[t.UserID] = append(byUser[t.UserID], t)
		if inWindow(t.OccurredAt) {
			if res.leads[t.PartnerID] == nil {
				res.leads[t.PartnerID] = map[string]bool{}
			}
			res.leads[t.PartnerID][t.UserID] = true
		}
	}
	convByID := map[string]schemas.Conversion{}
	for _, c := range d.Conversions {
		convByID[c.ID] = c
	}
	for _, c := range d.Costs {
		if inWindow(c.OccurredAt) {
			if res.cost[c.PartnerID] == nil {
				res.cost[c.PartnerID] = new(big.Rat)
			}
			res.cost[c.PartnerID].Add(res.cost[c.PartnerID], base(c.Amount.String(), c.Currency))
		}
	}
	for _, c := range d.Conversions {
		if !inWindow(c.OccurredAt) {
			continue
		}
		anchor := c.OccurredAt
		refund := c.Kind == schemas.ConversionRefund
		if refund {
			orig, ok := convByID[c.RefundOf]
			if !ok {
				continue
			}
			anchor = orig.OccurredAt
		}
		var el []schemas.Touchpoint
		for _, t := range byUser[c.UserID] {
			if !t.OccurredAt.Before(anchor.Add(-lookback)) && !t.OccurredAt.After(anchor) {
				el = append(el, t)
			}
		}
		if len(el) == 0 {
			continue
		}
		sort.Slice(el, func(i, j int) bool {
			if !el[i].OccurredAt.Equal(el[j].OccurredAt) {
				return el[i].OccurredAt.Before(el[j].OccurredAt)
			}
			return el[i].ID < el[j].ID
		})
		revenue := base(c.Amount.String(), c.Currency)
		credit := big.NewRat(1, 1)
		if refund {
			revenue.Abs(revenue).Neg(revenue)
			credit.Neg(credit)
		}
		n := len(el)
		for _, m := range oracleModels {
			per := make([]*big.Rat, n)
			for i := range per {
				per[i] = new(big.Rat)
			}
			switch m {
			case "first_touch":
				per[0] = big.NewRat(1, 1)
			case "last_touch":
				per[n-1] = big.NewRat(1, 1)
			case "linear":
				for i := range per {
					per[i] = big.NewRat(1, int64(n))
				}
			case "time_decay":
				for i, t := range el {
					f := math.Exp2(-anchor.Sub(t.OccurredAt).Seconds() / halfLife.Seconds())
					per[i] = roundAway(rat(strconv.FormatFloat(f, 'f', -1, 64)), 12)
				}
			case "position_based":
				switch n {
				case 1:
					per[0] = big.NewRat(1, 1)
				case 2:
					per[0], per[1] = big.NewRat(1, 2), big.NewRat(1, 2)
				default:
					per[0], per[n-1] = big.NewRat(2, 5), big.NewRat(2, 5)
					for i := 1; i < n-1; i++ {
						per[i] = big.NewRat(1, 5*int64(n-2))
					}
				}
			}
			wp := map[string]*big.Rat{}
			for i, t := range el {
				if wp[t.PartnerID] == nil {
					wp[t.PartnerID] = new(big.Rat)
				}
				wp[t.PartnerID].Add(wp[t.PartnerID], per[i])
			}
			var partners []string
			for p := range wp {
				partners = append(partners, p)
			}
			sort.Strings(partners)
			ws := make([]*big.Rat, len(partners))
			for i, p := range partners {
				ws[i] = wp[p]
			}
			revs, creds := split(revenue, ws, 2), split(credit, ws, 4)
			for i, p := range partners {
				k := oracleKey{p, m}
				tot := res.attr[k]
				if tot == nil {
					tot = &oracleTotals{revenue: new(big.Rat), credit: new(big.Rat), newCust: new(big.Rat), customers: map[string]bool{}}
					res.attr[k] = tot
				}
				tot.revenue.Add(tot.revenue, revs[i])
				tot.credit.Add(tot.credit, creds[i])
				if c.NewCustomer && !refund {
					tot.newCust.Add(tot.newCust, creds[i])
				}
				if !refund && creds[i].Sign() > 0 {
					tot.customers[c.UserID] = true
				}
			}
		}
	}
	return res
}

// oracleRow is the expected API row of a partner and model, every figure
// formatted as the API formats it.
type oracleRow struct {
	revenue, cost, conversions, newCustomers string
	leads, customers                         int
	roi, cpl, cac, ltv, ltvCac               string
}

func fix(r *big.Rat, places int) string { return roundAway(r, places).FloatString(places) }

func (o *oracleResult) row(partner, model string) oracleRow {
	tot := o.attr[oracleKey{partner, model}]
	if tot == nil {
		tot = &oracleTotals{revenue: new(big.Rat), credit: new(big.Rat), newCust: new(big.Rat), customers: map[string]bool{}}
	}
	cost := o.cost[partner]
	if cost == nil {
		cost = new(big.Rat)
	}
	leads := len(o.leads[partner])
	r := oracleRow{
		revenue: fix(tot.revenue, 2), cost: fix(cost, 2), conversions: fix(tot.credit, 4), newCustomers: fix(tot.newCust, 4),
		leads: leads, customers: len(tot.customers), roi: "null", cpl: "null", cac: "null", ltv: "null", ltvCac: "null",
	}
	if cost.Sign() != 0 {
		r.roi = fix(new(big.Rat).Quo(new(big.Rat).Sub(tot.revenue, cost), cost), 4)
	}
	if leads > 0 {
		r.cpl = fix(new(big.Rat).Quo(cost, big.NewRat(int64(leads), 1)), 2)
	}
	if tot.newCust.Sign() > 0 {
		r.cac = fix(new(big.Rat).Quo(cost, tot.newCust), 2)
	}
	cust := big.NewRat(int64(len(tot.customers)), 1)
	if cust.Sign() > 0 {
		r.ltv = fix(new(big.Rat).Quo(tot.revenue, cust), 2)
		if tot.newCust.Sign() > 0 && cost.Sign() > 0 {
			ltv := new(big.Rat).Quo(tot.revenue, cust)
			cac := new(big.Rat).Quo(cost, tot.newCust)
			r.ltvCac = fix(new(big.Rat).Quo(ltv, cac), 4)
		}
	}
	return r
}

func (o *oracleResult) partners() []string {
	set := map[string]bool{}
	for k := range o.attr {
		set[k.partner] = true
	}
	for p := range o.cost {
		set[p] = true
	}
	for p := range o.leads {
		set[p] = true
	}
	var out []string
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func optStr(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}

func optFloat(f *float64) string {
	if f == nil {
		return "null"
	}
	return fmt.Sprintf("%.4f", *f)
}
