package chaos

import (
	"fmt"
	"sort"
	"time"

	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
)

// The ROI oracle: from the inputs the load had acknowledged (conversions,
// costs) and the touchpoints the edge recorded (read back from the
// touchpoints topic), the expected revenue, cost, conversion credit and
// leads of every partner under every model, computed here with the
// attribution rules of processors/attribution/models (eligibility, weights,
// the largest-remainder split to the cent, base-currency rounding) and
// aggregated independently of the processor and of ClickHouse. Every input
// of a run falls inside the default ROI window (the run lasts minutes).

type roiKey struct{ partner, model string }

type roiCell struct {
	Revenue, Cost, Conversions decimal.Decimal
	Leads                      int
}

func oracleROI(a config.Attribution, partners []string, touches []schemas.Touchpoint, convs []schemas.Conversion, costs []schemas.Cost) (map[roiKey]*roiCell, error) {
	out := map[roiKey]*roiCell{}
	for _, p := range partners {
		for _, m := range models.All {
			out[roiKey{p, m}] = &roiCell{}
		}
	}
	rate := func(cur string) (decimal.Decimal, error) {
		r, err := decimal.NewFromString(a.CurrencyRates[cur])
		if err != nil {
			return decimal.Zero, fmt.Errorf("currency %s: %w", cur, err)
		}
		return r, nil
	}
	sec := func(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }
	byUser := map[string][]models.Touch{}
	leads := map[string]map[string]bool{}
	for _, t := range touches {
		byUser[t.UserID] = append(byUser[t.UserID], models.Touch{ID: t.ID, PartnerID: t.PartnerID, At: sec(t.OccurredAt)})
		if leads[t.PartnerID] == nil {
			leads[t.PartnerID] = map[string]bool{}
		}
		leads[t.PartnerID][t.UserID] = true
	}
	for _, p := range partners {
		for _, m := range models.All {
			out[roiKey{p, m}].Leads = len(leads[p])
		}
	}
	for _, c := range costs {
		r, err := rate(c.Currency)
		if err != nil {
			return nil, err
		}
		for _, m := range models.All {
			if cell := out[roiKey{c.PartnerID, m}]; cell != nil {
				cell.Cost = cell.Cost.Add(models.ToBase(c.Amount, r))
			}
		}
	}
	byID := map[string]schemas.Conversion{}
	for _, c := range convs {
		byID[c.ID] = c
	}
	params := models.Params{Lookback: a.Lookback, HalfLife: a.TimeDecayHalfLife}
	one := decimal.NewFromInt(1)
	for _, c := range convs {
		anchor := sec(c.OccurredAt)
		revenueSign, credit := one, one
		if c.Kind == schemas.ConversionRefund {
			orig, ok := byID[c.RefundOf]
			if !ok {
				continue // its purchase was never acknowledged: nothing to reverse
			}
			anchor = sec(orig.OccurredAt)
			revenueSign, credit = one.Neg(), one.Neg()
		}
		el := models.Eligible(byUser[c.UserID], anchor, params.Lookback)
		if len(el) == 0 {
			continue // unattributed
		}
		r, err := rate(c.Currency)
		if err != nil {
			return nil, err
		}
		amount := models.ToBase(c.Amount, r).Abs().Mul(revenueSign)
		for _, m := range models.All {
			ws, err := models.Weights(m, el, anchor, params)
			if err != nil {
				return nil, err
			}
			rev := models.Split(amount, ws, 2)
			cr := models.Split(credit, ws, 4)
			for i, w := range ws {
				cell := out[roiKey{w.PartnerID, m}]
				if cell == nil {
					continue
				}
				cell.Revenue = cell.Revenue.Add(rev[i])
				cell.Conversions = cell.Conversions.Add(cr[i])
			}
		}
	}
	return out, nil
}

// roiRow is a row of GET /api/v1/analytics/roi.
type roiRow struct {
	PartnerID   string   `json:"partner_id"`
	Model       string   `json:"model"`
	Revenue     string   `json:"revenue"`
	Cost        string   `json:"cost"`
	Conversions float64  `json:"conversions"`
	Leads       uint64   `json:"leads"`
	ROI         *float64 `json:"roi"`
}

// compareROI lists every cell where the API differs from the oracle:
// revenue and cost to the cent, conversion credit to 4 places, leads, and
// ROI = (revenue − cost) / cost to 4 places.
func compareROI(want map[roiKey]*roiCell, rows []roiRow) []string {
	got := map[roiKey]roiRow{}
	for _, r := range rows {
		got[roiKey{r.PartnerID, r.Model}] = r
	}
	var diffs []string
	keys := make([]roiKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].partner != keys[j].partner {
			return keys[i].partner < keys[j].partner
		}
		return keys[i].model < keys[j].model
	})
	for _, k := range keys {
		w := want[k]
		g, ok := got[k]
		if !ok {
			if !w.Revenue.IsZero() || !w.Cost.IsZero() || w.Leads > 0 {
				diffs = append(diffs, fmt.Sprintf("%s/%s: no row, want revenue %s cost %s", k.partner, k.model, w.Revenue.StringFixed(2), w.Cost.StringFixed(2)))
			}
			continue
		}
		var d []string
		if g.Revenue != w.Revenue.StringFixed(2) {
			d = append(d, fmt.Sprintf("revenue %s want %s", g.Revenue, w.Revenue.StringFixed(2)))
		}
		if g.Cost != w.Cost.StringFixed(2) {
			d = append(d, fmt.Sprintf("cost %s want %s", g.Cost, w.Cost.StringFixed(2)))
		}
		if !decimal.NewFromFloat(g.Conversions).Round(4).Equal(w.Conversions.Round(4)) {
			d = append(d, fmt.Sprintf("conversions %v want %s", g.Conversions, w.Conversions.StringFixed(4)))
		}
		if int(g.Leads) != w.Leads {
			d = append(d, fmt.Sprintf("leads %d want %d", g.Leads, w.Leads))
		}
		var wantROI *float64
		if !w.Cost.IsZero() {
			f := w.Revenue.Sub(w.Cost).DivRound(w.Cost, 16).Round(4).InexactFloat64()
			wantROI = &f
		}
		if (g.ROI == nil) != (wantROI == nil) || (g.ROI != nil && *g.ROI != *wantROI) {
			d = append(d, fmt.Sprintf("roi %v want %v", fptr(g.ROI), fptr(wantROI)))
		}
		if len(d) > 0 {
			diffs = append(diffs, fmt.Sprintf("%s/%s: %v", k.partner, k.model, d))
		}
	}
	return diffs
}

func fptr(p *float64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}
