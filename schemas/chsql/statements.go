package chsql

import "strings"

// --- database and migrations (internal/chdb) ---------------------------------

var (
	// CreateDatabase creates the configured database ({database}).
	CreateDatabase = register("db.create_database", `CREATE DATABASE IF NOT EXISTS {database}`)
	// DropDatabase removes a database (tests and benchmarks).
	DropDatabase = register("db.drop_database", `DROP DATABASE IF EXISTS {database}`)
	// ServerVersion reads the server's version string.
	ServerVersion = register("db.server_version", `SELECT version()`)
	// CreateMigrationsTable records applied migrations.
	CreateMigrationsTable = register("db.migrations.create", `
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32, name String, applied_at DateTime('UTC')
) ENGINE = ReplacingMergeTree ORDER BY version`)
	// AppliedMigrations lists the versions already applied.
	AppliedMigrations = register("db.migrations.applied", `SELECT DISTINCT version FROM schema_migrations ORDER BY version`)
	// RecordMigration is a batch insert of one applied migration.
	RecordMigration = register("db.migrations.record", `INSERT INTO schema_migrations (version, name, applied_at)`)
)

// --- attribution processor: raw rows (batch inserts) -------------------------

var (
	InsertTouchpoints = register("attribution.insert.touchpoints", `
INSERT INTO touchpoints (id, user_id, partner_id, source, utm_source, utm_medium,
    utm_campaign, referrer, region, trace_id, occurred_at, ingested_at)`)
	InsertConversions = register("attribution.insert.conversions", `
INSERT INTO conversions (id, user_id, kind, amount, currency, amount_base,
    new_customer, refund_of, occurred_at, ingested_at)`)
	InsertCosts = register("attribution.insert.costs", `
INSERT INTO costs (id, partner_id, amount, currency, amount_base, category,
    occurred_at, ingested_at)`)
	InsertAttributions = register("attribution.insert.attributions", `
INSERT INTO attributions (id, conversion_id, user_id, partner_id, model, kind,
    version, credit, revenue, new_customer, converted_at, ingested_at)`)
)

// --- attribution processor: user history on a cache miss ---------------------

var (
	// TouchHistory loads the touchpoints of a set of users (IN ? binds a
	// clickhouse.GroupSet: a plain slice binds as an array, which IN does not
	// take on 18.16).
	TouchHistory = register("attribution.history.touchpoints", `
SELECT user_id, id, any(partner_id), any(occurred_at)
FROM touchpoints_by_user
WHERE user_id IN ?
GROUP BY user_id, id`)
	// ConversionHistory loads the conversions of a set of users.
	ConversionHistory = register("attribution.history.conversions", `
SELECT user_id, id, any(kind), any(refund_of), any(amount), any(currency),
    any(amount_base), any(new_customer), any(occurred_at)
FROM conversions
WHERE user_id IN ?
GROUP BY user_id, id`)
)

// --- webhooks delivery log ---------------------------------------------------

// InsertDeliveries is the delivery-log batch insert (one row per attempt).
var InsertDeliveries = register("webhooks.insert.deliveries", `
INSERT INTO webhook_deliveries (id, delivery_id, tenant_id, endpoint_id, event_id, event_type,
    attempt, status_code, outcome, latency_ms, error, trace_id, attempted_at)`)

// DeliveriesByTrace is every attempt of a trace, for an SRE following a
// trace id from the tracing backend to the delivery log.
var DeliveriesByTrace = register("webhooks.deliveries_by_trace", `
SELECT attempted_at, tenant_id, endpoint_id, delivery_id, attempt, outcome, status_code, error
FROM webhook_deliveries
WHERE trace_id = ?
ORDER BY attempted_at, attempt
LIMIT 1 BY id`)

// --- demo scenario -----------------------------------------------------------

var (
	// DemoDeliveryOutcomes counts deliveries per tenant and outcome for a set
	// of tenants (has(?, tenant_id) binds a []string as an array).
	DemoDeliveryOutcomes = register("demo.delivery_outcomes", `
SELECT tenant_id, outcome, uniqExact(delivery_id)
FROM webhook_deliveries
WHERE has(?, tenant_id)
GROUP BY tenant_id, outcome`)
	// DemoFirstTrace is the first delivered attempt of a tenant with a trace.
	DemoFirstTrace = register("demo.first_trace", `
SELECT trace_id, delivery_id
FROM webhook_deliveries
WHERE tenant_id = ? AND outcome = ? AND trace_id != ''
ORDER BY attempted_at, id
LIMIT 1`)
)

// --- ROI (processors/attribution/roi) ----------------------------------------

// ROISource picks the tables an ROI query reads.
type ROISource int

const (
	// ROIRollups reads the materialized-view targets (the serving path).
	ROIRollups ROISource = iota
	// ROIRaw reads the raw tables, de-duplicated by id (checks, benchmarks).
	ROIRaw
)

func (s ROISource) String() string {
	if s == ROIRaw {
		return "raw"
	}
	return "rollups"
}

// ROIFilter says which optional conditions an ROI query carries. Each is a
// separate statement, not a "? = ” OR partner_id = ?" condition, so
// ClickHouse can use the primary key.
type ROIFilter struct {
	Partner bool // AND partner_id = ?
	Model   bool // AND model = ? (attribution only)
}

type roiKey struct {
	src    ROISource
	filter ROIFilter
}

var roiAttr, roiCost, roiLeads = map[roiKey]Statement{}, map[roiKey]Statement{}, map[roiKey]Statement{}

// ROIAttribution sums revenue, conversions and new customers per partner and
// model over a window of days; bound: from day, to day ('YYYY-MM-DD'), then
// partner id and model as the filter says.
func ROIAttribution(src ROISource, f ROIFilter) Statement { return roiAttr[roiKey{src, f}] }

// ROICost sums cost per partner over a window (model is ignored).
func ROICost(src ROISource, f ROIFilter) Statement {
	return roiCost[roiKey{src, ROIFilter{Partner: f.Partner}}]
}

// ROILeads counts distinct touched users per partner over a window (model
// is ignored).
func ROILeads(src ROISource, f ROIFilter) Statement {
	return roiLeads[roiKey{src, ROIFilter{Partner: f.Partner}}]
}

// ROI queries de-duplicate per record id before summing: argMax(…, version)
// keeps the latest attribution of a (conversion, model, partner), any()
// collapses duplicate cost rows, uniqExact counts users once.
var roiTemplates = map[ROISource]struct{ attr, cost, leads string }{
	ROIRollups: {
		attr: `
SELECT partner_id, model, sum(r), sum(c), sum(n), uniqExactIf(u, c > 0 AND k != 'refund')
FROM (
  SELECT partner_id, model, conversion_id, anyMerge(user_id) AS u, anyMerge(kind) AS k,
         argMaxMerge(revenue) AS r, argMaxMerge(credit) AS c, argMaxMerge(new_customer) AS n
  FROM attribution_daily
  WHERE day >= toDate(?) AND day <= toDate(?) __PARTNER__ __MODEL__
  GROUP BY partner_id, model, day, conversion_id
)
GROUP BY partner_id, model`,
		cost: `
SELECT partner_id, sum(a)
FROM (
  SELECT partner_id, id, anyMerge(amount) AS a FROM costs_daily
  WHERE day >= toDate(?) AND day <= toDate(?) __PARTNER__
  GROUP BY partner_id, day, id
)
GROUP BY partner_id`,
		leads: `
SELECT partner_id, uniqExactMerge(users)
FROM leads_daily
WHERE day >= toDate(?) AND day <= toDate(?) __PARTNER__
GROUP BY partner_id`,
	},
	ROIRaw: {
		attr: `
SELECT partner_id, model, sum(r), sum(c), sum(n), uniqExactIf(u, c > 0 AND k != 'refund')
FROM (
  SELECT partner_id, model, id, any(user_id) AS u, any(kind) AS k,
         argMax(revenue, version) AS r, argMax(credit, version) AS c, argMax(new_customer, version) AS n
  FROM attributions
  WHERE toDate(converted_at) >= toDate(?) AND toDate(converted_at) <= toDate(?) __PARTNER__ __MODEL__
  GROUP BY partner_id, model, id
)
GROUP BY partner_id, model`,
		cost: `
SELECT partner_id, sum(a)
FROM (
  SELECT partner_id, id, any(amount_base) AS a FROM costs
  WHERE toDate(occurred_at) >= toDate(?) AND toDate(occurred_at) <= toDate(?) __PARTNER__
  GROUP BY partner_id, id
)
GROUP BY partner_id`,
		leads: `
SELECT partner_id, uniqExact(user_id)
FROM touchpoints
WHERE toDate(occurred_at) >= toDate(?) AND toDate(occurred_at) <= toDate(?) __PARTNER__
GROUP BY partner_id`,
	},
}

func init() {
	for src, t := range roiTemplates {
		for _, partner := range []bool{false, true} {
			k := roiKey{src, ROIFilter{Partner: partner}}
			roiCost[k] = register(roiName("cost", src, k.filter), fill(t.cost, k.filter))
			roiLeads[k] = register(roiName("leads", src, k.filter), fill(t.leads, k.filter))
			for _, model := range []bool{false, true} {
				k := roiKey{src, ROIFilter{Partner: partner, Model: model}}
				roiAttr[k] = register(roiName("attribution", src, k.filter), fill(t.attr, k.filter))
			}
		}
	}
}

func roiName(what string, src ROISource, f ROIFilter) string {
	n := "roi." + what + "." + src.String()
	if f.Partner {
		n += ".partner"
	}
	if f.Model {
		n += ".model"
	}
	return n
}

func fill(sql string, f ROIFilter) string {
	partner, model := "", ""
	if f.Partner {
		partner = "AND partner_id = ?"
	}
	if f.Model {
		model = "AND model = ?"
	}
	return strings.NewReplacer("__PARTNER__", partner, "__MODEL__", model).Replace(sql)
}
