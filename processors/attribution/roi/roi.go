// Package roi owns the partner ROI read path: the window queries over the
// ClickHouse rollups (and the same figures from the raw tables, for checks
// and benchmarks), the derived metrics (ROI, CPL, CAC, LTV, LTV:CAC) and the
// GET /api/v1/analytics/roi handler. Every value in SQL is a bound
// parameter; each side (attribution, cost, leads) is aggregated on its own
// and merged in Go, so no join ever multiplies revenue.
package roi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// Window bounds, in days.
const (
	MinWindow = 1
	MaxWindow = 3650
)

// ErrBadRequest marks a query the caller must fix (HTTP 400).
var ErrBadRequest = errors.New("bad ROI request")

// Query selects ROI rows.
type Query struct {
	PartnerID string    // "": every partner
	Model     string    // "": every model
	Window    int       // days, MinWindow..MaxWindow
	AsOf      time.Time // the window is the Window UTC days ending with AsOf's day; zero: now
}

// Range returns the first and last UTC day of the window, as YYYY-MM-DD.
func (q Query) Range() (from, to string) {
	asOf := q.AsOf
	if asOf.IsZero() {
		asOf = time.Now()
	}
	end := asOf.UTC().Truncate(24 * time.Hour)
	start := end.AddDate(0, 0, -(q.Window - 1))
	return start.Format(time.DateOnly), end.Format(time.DateOnly)
}

// Validate checks the window and model.
func (q Query) Validate() error {
	if q.Window < MinWindow || q.Window > MaxWindow {
		return fmt.Errorf("%w: window must be between %d and %d days (got %d)", ErrBadRequest, MinWindow, MaxWindow, q.Window)
	}
	if q.Model != "" && !models.Valid(q.Model) {
		return fmt.Errorf("%w: unknown model %q", ErrBadRequest, q.Model)
	}
	return nil
}

// Totals are the summed inputs of one partner and model over a window.
type Totals struct {
	PartnerID    string
	Model        string
	Revenue      decimal.Decimal // attributed, base currency, cents
	Conversions  decimal.Decimal // fractional credit, 4 places
	NewCustomers decimal.Decimal // fractional credit, 4 places
	Customers    uint64          // distinct users with a credited (credit > 0) non-refund conversion
	Cost         decimal.Decimal
	Leads        uint64 // distinct users who touched the partner
}

// Row is one ROI result, as the API returns it.
type Row struct {
	PartnerID    string   `json:"partner_id"`
	PartnerName  string   `json:"partner_name,omitempty"`
	Model        string   `json:"model"`
	Revenue      string   `json:"revenue"`
	Cost         string   `json:"cost"`
	Conversions  float64  `json:"conversions"`
	Leads        uint64   `json:"leads"`
	NewCustomers float64  `json:"new_customers"`
	Customers    uint64   `json:"customers"`
	ROI          *float64 `json:"roi"`
	CPL          *string  `json:"cpl"`
	CAC          *string  `json:"cac"`
	LTV          *string  `json:"ltv"`
	LTVCAC       *float64 `json:"ltv_cac"`
}

// Metrics derives the row of t. Money is rounded half away from zero to
// cents, ratios to 4 decimal places; a ratio with a zero denominator is
// null: ROI = (revenue − cost)/cost, CPL = cost/leads, CAC = cost/new
// customers, LTV = revenue/customers, LTV:CAC = LTV/CAC computed from the
// unrounded sums (revenue·new_customers / (customers·cost)).
func Metrics(t Totals) Row {
	r := Row{
		PartnerID: t.PartnerID, Model: t.Model,
		Revenue: t.Revenue.StringFixed(2), Cost: t.Cost.StringFixed(2),
		Conversions: t.Conversions.InexactFloat64(), NewCustomers: t.NewCustomers.InexactFloat64(),
		Leads: t.Leads, Customers: t.Customers,
	}
	money := func(num, den decimal.Decimal) *string {
		if !den.IsPositive() {
			return nil
		}
		s := num.DivRound(den, 16).StringFixed(2)
		return &s
	}
	ratio := func(num, den decimal.Decimal) *float64 {
		if den.IsZero() {
			return nil
		}
		f := num.DivRound(den, 16).Round(4).InexactFloat64()
		return &f
	}
	r.ROI = ratio(t.Revenue.Sub(t.Cost), t.Cost)
	r.CPL = money(t.Cost, decimal.NewFromUint64(t.Leads))
	r.CAC = money(t.Cost, t.NewCustomers)
	cust := decimal.NewFromUint64(t.Customers)
	r.LTV = money(t.Revenue, cust)
	if t.Customers > 0 && t.NewCustomers.IsPositive() && t.Cost.IsPositive() {
		r.LTVCAC = ratio(t.Revenue.Mul(t.NewCustomers), cust.Mul(t.Cost))
	}
	return r
}

// Source picks the tables a query reads.
type Source = chsql.ROISource

const (
	// Rollups reads roi_daily (the serving path).
	Rollups = chsql.ROIRollups
	// Raw reads the raw tables, de-duplicated by id (checks, benchmarks).
	Raw = chsql.ROIRaw
)

// Load returns the totals of q, one per partner and model, sorted. Every
// partner with an attribution, a cost or a lead in the window gets a row for
// every selected model; a selected partner gets rows even without data.
// The rollups answer in one query (roi_daily), the raw tables in three.
func Load(ctx context.Context, conn driver.Conn, q Query, src Source) ([]Totals, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	if src != Rollups && src != Raw {
		return nil, fmt.Errorf("roi: unknown source %d", src)
	}
	from, to := q.Range()
	// Optional filters pick another statement, never change values in
	// SQL text: "partner_id = ?" lets ClickHouse use the primary key.
	f := chsql.ROIFilter{Partner: q.PartnerID != "", Model: q.Model != ""}
	type key struct{ partner, model string }
	attr := map[key]*Totals{}
	partners := map[string]bool{}
	if q.PartnerID != "" {
		partners[q.PartnerID] = true
	}
	costs := map[string]decimal.Decimal{}
	leads := map[string]uint64{}
	if src == Rollups {
		rows, err := conn.Query(ctx, chsql.ROIRollup(f).SQL, args(q, true, from, to)...)
		if err != nil {
			return nil, fmt.Errorf("roi rollup: %w", err)
		}
		for rows.Next() {
			t := &Totals{}
			if err := rows.Scan(&t.PartnerID, &t.Model, &t.Revenue, &t.Conversions, &t.NewCustomers, &t.Customers, &t.Cost, &t.Leads); err != nil {
				rows.Close()
				return nil, fmt.Errorf("roi rollup: %w", err)
			}
			attr[key{t.PartnerID, t.Model}] = t
			partners[t.PartnerID] = true
			// Cost and leads are per partner, repeated under every model.
			costs[t.PartnerID], leads[t.PartnerID] = t.Cost, t.Leads
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("roi rollup: %w", err)
		}
	} else {
		if err := loadRaw(ctx, conn, q, f, from, to, func(t *Totals) {
			attr[key{t.PartnerID, t.Model}] = t
			partners[t.PartnerID] = true
		}, costs, leads, partners); err != nil {
			return nil, err
		}
	}
	ms := models.All
	if q.Model != "" {
		ms = []string{q.Model}
	}
	ps := make([]string, 0, len(partners))
	for p := range partners {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	var out []Totals
	for _, p := range ps {
		for _, m := range ms {
			t := Totals{PartnerID: p, Model: m}
			if a, ok := attr[key{p, m}]; ok {
				t = *a
			}
			t.Cost = costs[p]
			t.Leads = leads[p]
			out = append(out, t)
		}
	}
	return out, nil
}

// loadRaw reads the three raw-table queries: attribution (per partner and
// model), cost and leads (per partner).
func loadRaw(ctx context.Context, conn driver.Conn, q Query, f chsql.ROIFilter, from, to string,
	attr func(*Totals), costs map[string]decimal.Decimal, leads map[string]uint64, partners map[string]bool) error {
	rows, err := conn.Query(ctx, chsql.ROIRawAttribution(f).SQL, args(q, true, from, to)...)
	if err != nil {
		return fmt.Errorf("roi attribution: %w", err)
	}
	for rows.Next() {
		t := &Totals{}
		if err := rows.Scan(&t.PartnerID, &t.Model, &t.Revenue, &t.Conversions, &t.NewCustomers, &t.Customers); err != nil {
			rows.Close()
			return fmt.Errorf("roi attribution: %w", err)
		}
		attr(t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("roi attribution: %w", err)
	}
	rows, err = conn.Query(ctx, chsql.ROIRawCost(f).SQL, args(q, false, from, to)...)
	if err != nil {
		return fmt.Errorf("roi cost: %w", err)
	}
	for rows.Next() {
		var p string
		var c decimal.Decimal
		if err := rows.Scan(&p, &c); err != nil {
			rows.Close()
			return fmt.Errorf("roi cost: %w", err)
		}
		costs[p] = c
		partners[p] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("roi cost: %w", err)
	}
	rows, err = conn.Query(ctx, chsql.ROIRawLeads(f).SQL, args(q, false, from, to)...)
	if err != nil {
		return fmt.Errorf("roi leads: %w", err)
	}
	for rows.Next() {
		var p string
		var n uint64
		if err := rows.Scan(&p, &n); err != nil {
			rows.Close()
			return fmt.Errorf("roi leads: %w", err)
		}
		leads[p] = n
		partners[p] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("roi leads: %w", err)
	}
	return nil
}

// args are the bound values of an ROI statement, in order: the window,
// then the partner and (for attribution) the model when they filter.
func args(q Query, model bool, from, to string) []any {
	out := []any{from, to}
	if q.PartnerID != "" {
		out = append(out, q.PartnerID)
	}
	if model && q.Model != "" {
		out = append(out, q.Model)
	}
	return out
}
