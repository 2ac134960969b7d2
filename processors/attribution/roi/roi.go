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
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
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
type Source int

const (
	// Rollups reads the materialized-view targets (the serving path).
	Rollups Source = iota
	// Raw reads the raw tables, de-duplicated by id (checks, benchmarks).
	Raw
)

type sqlSet struct{ attr, cost, leads string }

// Queries de-duplicate per record id before summing: argMax(…, version)
// keeps the latest attribution of a (conversion, model, partner), any()
// collapses duplicate cost rows, uniqExact counts users once.
var queries = map[Source]sqlSet{
	Rollups: {
		attr: `SELECT partner_id, model, sum(r), sum(c), sum(n), uniqExactIf(u, c > 0 AND k != 'refund')
FROM (
  SELECT partner_id, model, conversion_id, anyMerge(user_id) AS u, anyMerge(kind) AS k,
         argMaxMerge(revenue) AS r, argMaxMerge(credit) AS c, argMaxMerge(new_customer) AS n
  FROM attribution_daily
  WHERE day >= toDate(?) AND day <= toDate(?) __PARTNER__ __MODEL__
  GROUP BY partner_id, model, day, conversion_id
) GROUP BY partner_id, model`,
		cost: `SELECT partner_id, sum(a) FROM (
  SELECT partner_id, id, anyMerge(amount) AS a FROM costs_daily
  WHERE day >= toDate(?) AND day <= toDate(?) __PARTNER__
  GROUP BY partner_id, day, id
) GROUP BY partner_id`,
		leads: `SELECT partner_id, uniqExactMerge(users) FROM leads_daily
  WHERE day >= toDate(?) AND day <= toDate(?) __PARTNER__
  GROUP BY partner_id`,
	},
	Raw: {
		attr: `SELECT partner_id, model, sum(r), sum(c), sum(n), uniqExactIf(u, c > 0 AND k != 'refund')
FROM (
  SELECT partner_id, model, id, any(user_id) AS u, any(kind) AS k,
         argMax(revenue, version) AS r, argMax(credit, version) AS c, argMax(new_customer, version) AS n
  FROM attributions
  WHERE toDate(converted_at) >= toDate(?) AND toDate(converted_at) <= toDate(?) __PARTNER__ __MODEL__
  GROUP BY partner_id, model, id
) GROUP BY partner_id, model`,
		cost: `SELECT partner_id, sum(a) FROM (
  SELECT partner_id, id, any(amount_base) AS a FROM costs
  WHERE toDate(occurred_at) >= toDate(?) AND toDate(occurred_at) <= toDate(?) __PARTNER__
  GROUP BY partner_id, id
) GROUP BY partner_id`,
		leads: `SELECT partner_id, uniqExact(user_id) FROM touchpoints
  WHERE toDate(occurred_at) >= toDate(?) AND toDate(occurred_at) <= toDate(?) __PARTNER__
  GROUP BY partner_id`,
	},
}

// Load returns the totals of q, one per partner and model, sorted. Every
// partner with revenue, cost or leads in the window gets a row for every
// selected model; a selected partner gets rows even without data.
func Load(ctx context.Context, conn driver.Conn, q Query, src Source) ([]Totals, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	sq, ok := queries[src]
	if !ok {
		return nil, fmt.Errorf("roi: unknown source %d", src)
	}
	from, to := q.Range()
	type key struct{ partner, model string }
	attr := map[key]*Totals{}
	partners := map[string]bool{}
	if q.PartnerID != "" {
		partners[q.PartnerID] = true
	}
	// Optional filters change the shape of the SQL, never its values:
	// "partner_id = ?" (not "? = '' OR partner_id = ?") lets ClickHouse use
	// the primary key.
	attrSQL, attrArgs := filtered(sq.attr, q, true, from, to)
	rows, err := conn.Query(ctx, attrSQL, attrArgs...)
	if err != nil {
		return nil, fmt.Errorf("roi attribution: %w", err)
	}
	for rows.Next() {
		t := &Totals{}
		if err := rows.Scan(&t.PartnerID, &t.Model, &t.Revenue, &t.Conversions, &t.NewCustomers, &t.Customers); err != nil {
			rows.Close()
			return nil, fmt.Errorf("roi attribution: %w", err)
		}
		attr[key{t.PartnerID, t.Model}] = t
		partners[t.PartnerID] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("roi attribution: %w", err)
	}
	costs := map[string]decimal.Decimal{}
	costSQL, costArgs := filtered(sq.cost, q, false, from, to)
	rows, err = conn.Query(ctx, costSQL, costArgs...)
	if err != nil {
		return nil, fmt.Errorf("roi cost: %w", err)
	}
	for rows.Next() {
		var p string
		var c decimal.Decimal
		if err := rows.Scan(&p, &c); err != nil {
			rows.Close()
			return nil, fmt.Errorf("roi cost: %w", err)
		}
		costs[p] = c
		partners[p] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("roi cost: %w", err)
	}
	leads := map[string]uint64{}
	leadsSQL, leadsArgs := filtered(sq.leads, q, false, from, to)
	rows, err = conn.Query(ctx, leadsSQL, leadsArgs...)
	if err != nil {
		return nil, fmt.Errorf("roi leads: %w", err)
	}
	for rows.Next() {
		var p string
		var n uint64
		if err := rows.Scan(&p, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("roi leads: %w", err)
		}
		leads[p] = n
		partners[p] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("roi leads: %w", err)
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

// filtered fills the optional partner and model conditions of a query and
// returns its bound arguments in order.
func filtered(sql string, q Query, model bool, from, to string) (string, []any) {
	args := []any{from, to}
	partner, mod := "", ""
	if q.PartnerID != "" {
		partner = "AND partner_id = ?"
		args = append(args, q.PartnerID)
	}
	if model && q.Model != "" {
		mod = "AND model = ?"
		args = append(args, q.Model)
	}
	return strings.NewReplacer("__PARTNER__", partner, "__MODEL__", mod).Replace(sql), args
}
