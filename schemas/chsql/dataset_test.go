package chsql_test

import (
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// The fixed dataset every engine gets. It is small but has every shape the
// SQL must handle: records inserted twice (at-least-once), a refund, a late
// touchpoint that re-attributes a conversion (a higher version), costs in
// two currencies, a partner with cost but no revenue and one with leads
// only, delivery attempts with a retry, a duplicate and a dead letter, and
// times a few minutes either side of midnight UTC — which fall on another
// day in any other zone, so a zone-dependent day shows up as a difference.
//
// Ids the documentation's examples use (tn_0123456789abcdef, msg_…) exist
// here, so those examples return rows and are compared too.

const (
	partnerA = "tn_0123456789abcdef" // the docs' example partner
	partnerB = "tn_fedcba9876543210"
	partnerC = "tn_costonly00000000"  // cost, no attribution
	partnerD = "tn_leadonly00000000"  // touchpoints only
	delivery = "msg_2f1c9a7e4b3d5c6a" // the docs' example delivery
)

type dataset struct {
	day0 time.Time // midnight UTC of the day the suite runs
	rows map[chsql.Statement][][]any
	// rollup is what the processor adds to roi_daily after it is rebuilt
	// from the raw rows: INSERTs of corrections that cancel out (a row and
	// its reversal, in one block and across blocks) and of ledger rows, one
	// INSERT each, never replayed (the processor never repeats one).
	rollup [][][]any
}

func newDataset(now time.Time) dataset {
	day0 := now.UTC().Truncate(24 * time.Hour)
	at := func(day, h, m int) time.Time {
		return day0.AddDate(0, 0, day).Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
	}
	dec := decimal.RequireFromString
	ing := day0.Add(-time.Hour) // ingested_at: a fixed value so duplicates are identical
	late := at(0, 0, 20)

	// Kafka positions: some rows have none (written before the ledger
	// existed, or by SQL), the others one each; a duplicate (a replay of
	// the same record) has its original's.
	offset := int64(0)
	positions := map[string][]any{}
	src := func(topic, id string) []any {
		if p, ok := positions[topic+id]; ok {
			return p
		}
		offset++
		p := []any{topic, int32(offset % 2), offset}
		if offset%3 == 0 {
			p = []any{"", int32(-1), int64(-1)}
		}
		positions[topic+id] = p
		return p
	}
	tp := func(id, user, partner, source string, t time.Time, ingested time.Time) []any {
		return append([]any{id, user, partner, source, "newsletter", "email", "spring", "https://example.com/", "us-east", "4bf92f3577b34da6a3ce929d0e0e4736", t, ingested},
			src("partners.touchpoints.v1", id)...)
	}
	touches := [][]any{
		tp("tp-1", "u-1", partnerA, "utm", at(-2, 23, 30), ing),
		tp("tp-1", "u-1", partnerA, "utm", at(-2, 23, 30), ing), // duplicate
		tp("tp-2", "u-1", partnerB, "referral_header", at(-1, 0, 30), ing),
		tp("tp-3", "u-2", partnerA, "api_key", at(-1, 12, 0), ing),
		tp("tp-3", "u-2", partnerA, "api_key", at(-1, 12, 0), ing), // duplicate
		tp("tp-4", "u-2", partnerB, "utm", at(-1, 13, 0), late),    // arrives after c-2: re-attributes it
		tp("tp-5", "u-3", partnerB, "utm", at(-3, 10, 0), ing),
		tp("tp-6", "u-4", partnerD, "api_key", at(-1, 23, 45), ing),
		tp("tp-7", "u-it's", partnerD, "api_key", at(-5, 6, 0), ing), // a quote in an id
	}
	cv := func(id, user, kind string, amount, currency, base string, nc uint8, refundOf string, t time.Time) []any {
		return append([]any{id, user, kind, dec(amount), currency, dec(base), nc, refundOf, t, ing}, src("partners.conversions.v1", id)...)
	}
	convs := [][]any{
		cv("c-1", "u-1", "purchase", "100", "USD", "100", 1, "", at(-1, 8, 0)),
		cv("c-1", "u-1", "purchase", "100", "USD", "100", 1, "", at(-1, 8, 0)), // duplicate
		cv("c-2", "u-2", "purchase", "40", "EUR", "43.2", 0, "", at(-1, 23, 50)),
		cv("c-3", "u-1", "refund", "-30", "USD", "-30", 0, "c-1", at(0, 0, 10)),
		cv("c-4", "u-3", "signup", "0", "USD", "0", 1, "", at(-2, 23, 59)),
	}
	co := func(id, partner, amount, currency, base, category string, t time.Time) []any {
		return append([]any{id, partner, dec(amount), currency, dec(base), category, t, ing}, src("partners.costs.v1", id)...)
	}
	costs := [][]any{
		co("cost-1", partnerA, "25", "USD", "25", "cpc", at(-1, 10, 0)),
		co("cost-1", partnerA, "25", "USD", "25", "cpc", at(-1, 10, 0)), // duplicate
		co("cost-2", partnerB, "10", "EUR", "10.8", "commission", at(-2, 23, 30)),
		co("cost-3", partnerC, "5", "USD", "5", "monthly_fee", at(-1, 0, 5)),
		co("cost-4", partnerA, "7.5", "GBP", "9.525", "cpc", at(-40, 12, 0)), // outside a 30-day window
		co("cost-5", partnerA, "3", "USD", "3", "cpc", at(-31, 12, 0)),       // the day before a 30-day range starts
	}
	type attr struct {
		conv, user, partner, model, kind string
		version                          uint64
		credit, revenue, nc              string
		t                                time.Time
	}
	var attrs [][]any
	add := func(a attr, times int) {
		for range times {
			attrs = append(attrs, []any{a.conv + "/" + a.model + "/" + a.partner, a.conv, a.user, a.partner, a.model, a.kind,
				a.version, dec(a.credit), dec(a.revenue), dec(a.nc), a.t, ing})
		}
	}
	c1, c2, c3, c4 := at(-1, 8, 0), at(-1, 23, 50), at(0, 0, 10), at(-2, 23, 59)
	// c-1: u-1 touched A then B.
	add(attr{"c-1", "u-1", partnerA, "first_touch", "purchase", 2, "1", "100", "1", c1}, 2) // duplicated row
	add(attr{"c-1", "u-1", partnerB, "first_touch", "purchase", 2, "0", "0", "0", c1}, 1)
	add(attr{"c-1", "u-1", partnerA, "last_touch", "purchase", 2, "0", "0", "0", c1}, 1)
	add(attr{"c-1", "u-1", partnerB, "last_touch", "purchase", 2, "1", "100", "1", c1}, 2)
	add(attr{"c-1", "u-1", partnerA, "linear", "purchase", 2, "0.5", "50", "0.5", c1}, 1)
	add(attr{"c-1", "u-1", partnerB, "linear", "purchase", 2, "0.5", "50", "0.5", c1}, 1)
	// c-2: u-2 touched A; the late touch of B re-attributes it (version 2).
	add(attr{"c-2", "u-2", partnerA, "last_touch", "purchase", 1, "1", "43.2", "0", c2}, 1)
	add(attr{"c-2", "u-2", partnerA, "last_touch", "purchase", 2, "0", "0", "0", c2}, 1)
	add(attr{"c-2", "u-2", partnerB, "last_touch", "purchase", 2, "1", "43.2", "0", c2}, 1)
	add(attr{"c-2", "u-2", partnerA, "linear", "purchase", 1, "1", "43.2", "0", c2}, 1)
	add(attr{"c-2", "u-2", partnerA, "linear", "purchase", 2, "0.5", "21.6", "0", c2}, 1)
	add(attr{"c-2", "u-2", partnerB, "linear", "purchase", 2, "0.5", "21.6", "0", c2}, 1)
	// c-3: refund of c-1, split like c-1.
	add(attr{"c-3", "u-1", partnerB, "last_touch", "refund", 2, "-1", "-30", "0", c3}, 1)
	add(attr{"c-3", "u-1", partnerA, "linear", "refund", 2, "-0.5", "-15", "0", c3}, 1)
	add(attr{"c-3", "u-1", partnerB, "linear", "refund", 2, "-0.5", "-15", "0", c3}, 1)
	// c-4: a signup (no revenue, a new customer).
	add(attr{"c-4", "u-3", partnerB, "last_touch", "signup", 1, "1", "0", "1", c4}, 1)
	add(attr{"c-4", "u-3", partnerB, "time_decay", "signup", 1, "1", "0", "1", c4}, 1)

	dl := func(id, delivery, tenant, outcome, errText, reason string, attempt, status uint16, latency float64, t time.Time) []any {
		return []any{id, delivery, tenant, "ep_01", "ev-" + delivery, "order.completed", attempt, status, outcome, latency, errText, reason, "trace-" + id, t}
	}
	deliveries := [][]any{
		dl(delivery+"/1", delivery, partnerA, "retry", "HTTP 503", "http_status", 1, 503, 31.5, at(-1, 23, 59)),
		dl(delivery+"/2", delivery, partnerA, "delivered", "", "", 2, 200, 12.25, at(0, 0, 1)),
		dl(delivery+"/2", delivery, partnerA, "delivered", "", "", 2, 200, 12.25, at(0, 0, 1)), // duplicate
		dl("msg_dead/1", "msg_dead", partnerB, "retry", "connection refused", "connection_refused", 1, 0, 1.5, at(-1, 10, 0)),
		dl("msg_dead/2", "msg_dead", partnerB, "skipped", "circuit open", "breaker_open", 2, 0, 0, at(-1, 10, 1)),
		dl("msg_dead/3", "msg_dead", partnerB, "failed", "HTTP 500", "http_status", 3, 500, 80, at(-1, 10, 5)),
		dl("msg_gone/1", "msg_gone", partnerB, "disabled", "HTTP 410", "endpoint_gone", 1, 410, 5, at(-1, 11, 0)),
	}
	d := func(day int) string { return day0.AddDate(0, 0, day).Format(time.DateOnly) }
	zero := dec("0")
	roll := func(model, day, partner, prev, src string, revenue, conv string, attributions, offsets int64) []any {
		return []any{model, day, partner, prev, src, dec(revenue), dec(conv), zero, int64(0), zero, int64(0), attributions, int64(0), offsets}
	}
	epoch := "1970-01-01"
	rollupInserts := [][][]any{
		{ // a correction and its reversal in one block, and a ledger row
			roll("linear", d(-1), partnerB, epoch, "", "10.5", "0.25", 1, 0),
			roll("linear", d(-1), partnerB, epoch, "", "-10.5", "-0.25", -1, 0),
			roll("", epoch, "", epoch, "partners.touchpoints.v1/0", "0", "0", 0, 7),
			roll("", epoch, "lookback=720h0m0s half_life=168h0m0s split=2", epoch, "#params", "0", "0", 0, 1),
		},
		{ // a correction, and the ledger's next increment
			roll("last_touch", d(-2), partnerA, epoch, "", "4", "1", 1, 0),
			roll("", epoch, "", epoch, "partners.touchpoints.v1/0", "0", "0", 0, 5),
			roll("", epoch, "", epoch, "partners.conversions.v1/1", "0", "0", 0, 3),
		},
		{ // its reversal, in another block
			roll("last_touch", d(-2), partnerA, epoch, "", "-4", "-1", -1, 0),
		},
	}
	return dataset{day0: day0, rollup: rollupInserts, rows: map[chsql.Statement][][]any{
		chsql.InsertTouchpoints:  touches,
		chsql.InsertConversions:  convs,
		chsql.InsertCosts:        costs,
		chsql.InsertAttributions: attrs,
		chsql.InsertDeliveries:   deliveries,
	}}
}

// inserts are the dataset's statements in the order they are written
// (touchpoints first: the history view is fed by them).
var inserts = []chsql.Statement{chsql.InsertTouchpoints, chsql.InsertConversions, chsql.InsertCosts, chsql.InsertAttributions, chsql.InsertDeliveries}

// sampleArgs binds every registry SELECT to values that hit the dataset.
// A statement missing here fails the suite: a new query needs samples.
func (d dataset) sampleArgs() map[string][]any {
	from, to := d.day0.AddDate(0, 0, -29).Format(time.DateOnly), d.day0.Format(time.DateOnly)
	users := chsql.Set{Name: chsql.SetHistoryUsers, Values: []string{"u-1", "u-2", "u-it's"}}
	out := map[string][]any{
		chsql.ServerVersion.Name:     nil,
		chsql.AppliedMigrations.Name: nil,
		chsql.TouchHistory.Name:      {users},
		chsql.ConversionHistory.Name: {users},
		chsql.CostHistory.Name: {chsql.Set{Name: chsql.SetCostPartners, Values: []string{partnerA, partnerB}},
			chsql.Set{Name: chsql.SetCostIDs, Values: []string{"cost-1", "cost-2", "cost-9"}}},
		chsql.LedgerState.Name:          nil,
		chsql.RunningInserts.Name:       {"partners-attribution-rollup-"},
		chsql.ReconcileExpected.Name:    {from, to},
		chsql.ReconcileActual.Name:      {from, to},
		chsql.DemoDeliveryOutcomes.Name: {[]string{partnerA, partnerB}},
		chsql.DemoFirstTrace.Name:       {partnerA, "delivered"},
		chsql.DeliveriesByTrace.Name:    {"trace-" + delivery + "/2"},
		// partner B's deliveries of the last two days that failed for good
		chsql.UIDeliveries.Name: {partnerB, d.day0.AddDate(0, 0, -2).Format(time.DateTime), d.day0.AddDate(0, 0, 1).Format(time.DateTime),
			"order.completed", "order.completed", "failed", "failed", 50},
		chsql.UIDeliveryAttempts.Name: {partnerA, delivery},
		chsql.UIDeliveryStatus.Name:   {"", "", clickhouse.GroupSet{Value: []any{delivery, "msg_dead", "msg_gone"}}},
	}
	for _, f := range []chsql.ROIFilter{{}, {Partner: true}, {Model: true}, {Partner: true, Model: true}} {
		args := []any{from, to}
		if f.Partner {
			args = append(args, partnerB)
		}
		attr := args
		if f.Model {
			attr = append(append([]any(nil), args...), "linear")
		}
		out[chsql.ROIRollup(f).Name] = attr
		out[chsql.ROIRawAttribution(f).Name] = attr
		out[chsql.ROIRawCost(f).Name] = args
		out[chsql.ROIRawLeads(f).Name] = args
	}
	return out
}
