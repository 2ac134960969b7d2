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

// Every raw row the processor writes carries its record's Kafka position
// (src_topic, src_partition, src_offset): the history reads only rows the
// ledger (roi_daily) counts as committed. See schemas/clickhouse/README.md.
var (
	InsertTouchpoints = register("attribution.insert.touchpoints", `
INSERT INTO touchpoints (id, user_id, partner_id, source, utm_source, utm_medium,
    utm_campaign, referrer, region, trace_id, occurred_at, ingested_at,
    src_topic, src_partition, src_offset)`)
	InsertConversions = register("attribution.insert.conversions", `
INSERT INTO conversions (id, user_id, kind, amount, currency, amount_base,
    new_customer, refund_of, occurred_at, ingested_at, src_topic, src_partition, src_offset)`)
	InsertCosts = register("attribution.insert.costs", `
INSERT INTO costs (id, partner_id, amount, currency, amount_base, category,
    occurred_at, ingested_at, src_topic, src_partition, src_offset)`)
	InsertAttributions = register("attribution.insert.attributions", `
INSERT INTO attributions (id, conversion_id, user_id, partner_id, model, kind,
    version, credit, revenue, new_customer, converted_at, ingested_at)`)
)

// --- attribution processor: user history on a cache miss ---------------------

// A record's positions: every distinct Kafka position of its rows, as
// "topic/partition@offset" ("/-1@-1" for rows written without one). A record
// is committed when any of them is below the ledger's end offset of its
// partition (or has none).
const positions = `groupUniqArray(concat(src_topic, '/', toString(src_partition), '@', toString(src_offset)))`

var (
	// TouchHistory loads the touchpoints of a set of users (the Set
	// SetHistoryUsers, sent beside the query: see Set).
	TouchHistory = register("attribution.history.touchpoints", `
SELECT user_id, id, any(partner_id), any(occurred_at), `+positions+`
FROM touchpoints_by_user
WHERE user_id IN `+SetHistoryUsers+`
GROUP BY user_id, id`)
	// ConversionHistory loads the conversions of a set of users (the Set
	// SetHistoryUsers).
	ConversionHistory = register("attribution.history.conversions", `
SELECT user_id, id, any(kind), any(refund_of), any(amount), any(currency),
    any(amount_base), any(new_customer), any(occurred_at), `+positions+`
FROM conversions
WHERE user_id IN `+SetHistoryUsers+`
GROUP BY user_id, id`)
	// CostHistory finds which of a set of cost ids (SetCostIDs, of the
	// partners in SetCostPartners) are already stored: duplicates and
	// replays are not counted twice.
	CostHistory = register("attribution.history.costs", `
SELECT id, `+positions+`
FROM costs
WHERE partner_id IN `+SetCostPartners+` AND id IN `+SetCostIDs+`
GROUP BY id`)
)

// --- attribution processor: the rollup and its ingest ledger -----------------

// RollupColumns are the columns of roi_daily in InsertRollup's order.
const RollupColumns = `model, day, partner_id, prev_day, src, revenue, conversions, new_customers,
    customers, cost, leads, attributions, costs, offsets`

// Models lists the attribution models as SQL (models.All): a literal IN list
// keeps roi_daily's primary key (model, day, …) usable.
const Models = `('first_touch', 'last_touch', 'linear', 'time_decay', 'position_based')`

var (
	// InsertRollup writes one batch's corrections and its ledger rows in one
	// INSERT: roi_daily is unpartitioned, so the block is one part and lands
	// whole or not at all.
	InsertRollup = register("attribution.insert.rollup", `INSERT INTO roi_daily (`+RollupColumns+`)`)
	// LedgerState reads the ledger: per source partition ("topic/partition")
	// the committed end offset, and the '#params' rows.
	LedgerState = register("attribution.ledger.state", `
SELECT src, partner_id, sum(offsets)
FROM roi_daily
WHERE model = '' AND day = toDate(0) AND prev_day = toDate(0)
GROUP BY src, partner_id`)
	// RunningInserts lists the queries still running whose id starts with ?:
	// a rollup INSERT whose outcome the processor did not see may still be
	// running, and the ledger is read only once it is not.
	RunningInserts = register("attribution.ledger.running", `
SELECT count(), groupArray(query_id)
FROM system.processes
WHERE startsWith(query_id, ?)`)
)

// expectedRollup computes roi_daily's data rows from the raw tables, de-
// duplicated by id (latest version): what the rollup must hold. It is the
// backfill of migration 0204 as one SELECT.
const expectedRollup = `
SELECT model, day, partner_id, prev_day,
    toDecimal64(sum(revenue), 4) AS revenue, toDecimal64(sum(conversions), 4) AS conversions,
    toDecimal64(sum(new_customers), 4) AS new_customers, toInt64(sum(customers)) AS customers,
    toDecimal64(sum(cost), 4) AS cost, toInt64(sum(leads)) AS leads,
    toInt64(sum(attributions)) AS attributions, toInt64(sum(costs)) AS costs
FROM
(
    SELECT model, day, partner_id, toDate(0) AS prev_day,
        toDecimal64(sum(r), 4) AS revenue, toDecimal64(sum(c), 4) AS conversions, toDecimal64(sum(n), 4) AS new_customers,
        toInt64(0) AS customers, toDecimal64(0, 4) AS cost, toInt64(0) AS leads, toInt64(count()) AS attributions, toInt64(0) AS costs
    FROM
    (
        SELECT partner_id, model, id, toDate(any(converted_at)) AS day,
            argMax(revenue, version) AS r, argMax(credit, version) AS c, argMax(new_customer, version) AS n
        FROM attributions
        __SLICE__
        GROUP BY partner_id, model, id
    )
    GROUP BY model, day, partner_id
  UNION ALL
    SELECT model, d AS day, partner_id, p AS prev_day,
        toDecimal64(0, 4), toDecimal64(0, 4), toDecimal64(0, 4),
        toInt64(count()), toDecimal64(0, 4), toInt64(0), toInt64(0), toInt64(0)
    FROM
    (
        SELECT partner_id, model, days, arrayPushFront(arrayPopBack(days), toDate(0)) AS prevs
        FROM
        (
            SELECT partner_id, model, u, arraySort(groupUniqArray(day)) AS days
            FROM
            (
                SELECT partner_id, model, id, any(user_id) AS u, any(kind) AS k,
                    toDate(any(converted_at)) AS day, argMax(credit, version) AS c
                FROM attributions
                __SLICE__
                GROUP BY partner_id, model, id
            )
            WHERE c > 0 AND k != 'refund'
            GROUP BY partner_id, model, u
        )
    )
    ARRAY JOIN days AS d, prevs AS p
    GROUP BY model, d, partner_id, p
  UNION ALL
    SELECT model, day, partner_id, toDate(0),
        toDecimal64(0, 4), toDecimal64(0, 4), toDecimal64(0, 4),
        toInt64(0), toDecimal64(sum(a), 4), toInt64(0), toInt64(0), toInt64(count())
    FROM
    (
        SELECT partner_id, id, toDate(any(occurred_at)) AS day, any(amount_base) AS a
        FROM costs
        __SLICE__
        GROUP BY partner_id, id
    )
    ARRAY JOIN ` + "['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based']" + ` AS model
    GROUP BY model, day, partner_id
  UNION ALL
    SELECT model, d, partner_id, p,
        toDecimal64(0, 4), toDecimal64(0, 4), toDecimal64(0, 4),
        toInt64(0), toDecimal64(0, 4), toInt64(count()), toInt64(0), toInt64(0)
    FROM
    (
        SELECT partner_id, d, p
        FROM
        (
            SELECT partner_id, days, arrayPushFront(arrayPopBack(days), toDate(0)) AS prevs
            FROM
            (
                SELECT partner_id, user_id, arraySort(groupUniqArray(toDate(occurred_at))) AS days
                FROM touchpoints
                __SLICE__
                GROUP BY partner_id, user_id
            )
        )
        ARRAY JOIN days AS d, prevs AS p
    )
    ARRAY JOIN ` + "['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based']" + ` AS model
    GROUP BY model, d, partner_id, p
)
__WHERE__
GROUP BY model, day, partner_id, prev_day`

var (
	// ReconcileExpected is roi_daily's data rows computed from the raw
	// tables, for the days [?, ?]: the reconciliation's reference.
	ReconcileExpected = register("attribution.reconcile.expected",
		strings.NewReplacer("__WHERE__", "WHERE day >= toDate(?) AND day <= toDate(?)", "__SLICE__", "").Replace(expectedRollup))
	// ReconcileActual is roi_daily's data rows for the days [?, ?], summed
	// per key (rows whose every sum is zero left out: a correction that
	// cancelled a row leaves such a row until a merge removes it).
	ReconcileActual = register("attribution.reconcile.actual", `
SELECT model, day, partner_id, prev_day,
    sum(revenue), sum(conversions), sum(new_customers), sum(customers),
    sum(cost), sum(leads), sum(attributions), sum(costs)
FROM roi_daily
WHERE model IN `+Models+` AND day >= toDate(?) AND day <= toDate(?)
GROUP BY model, day, partner_id, prev_day
HAVING sum(revenue) != 0 OR sum(conversions) != 0 OR sum(new_customers) != 0 OR sum(customers) != 0
    OR sum(cost) != 0 OR sum(leads) != 0 OR sum(attributions) != 0 OR sum(costs) != 0`)
	// RebuildRollupSlice is RebuildRollup for the partners p with
	// cityHash64(p) % m = r — bound m, r four times over — so a large
	// database is rebuilt in slices that each fit in memory.
	RebuildRollupSlice = register("attribution.rollup.rebuild.slice", `
INSERT INTO roi_daily (`+RollupColumns+`)
SELECT model, day, partner_id, prev_day, '', revenue, conversions, new_customers,
    customers, cost, leads, attributions, costs, toInt64(0)
FROM
(`+strings.NewReplacer("__WHERE__", "", "__SLICE__", "WHERE cityHash64(partner_id) % ? = ?").Replace(expectedRollup)+`
)`)
	// TruncateRollup empties roi_daily (RebuildRollup follows; benchmarks).
	TruncateRollup = register("attribution.rollup.truncate", `TRUNCATE TABLE roi_daily`)
	// RebuildRollup fills roi_daily's data rows from the raw tables (after
	// TruncateRollup): what migration 0204 does to an existing database.
	RebuildRollup = register("attribution.rollup.rebuild", `
INSERT INTO roi_daily (`+RollupColumns+`)
SELECT model, day, partner_id, prev_day, '', revenue, conversions, new_customers,
    customers, cost, leads, attributions, costs, toInt64(0)
FROM
(`+strings.NewReplacer("__WHERE__", "", "__SLICE__", "").Replace(expectedRollup)+`
)`)
)

// --- webhooks delivery log ---------------------------------------------------

// InsertDeliveries is the delivery-log batch insert (one row per attempt).
var InsertDeliveries = register("webhooks.insert.deliveries", `
INSERT INTO webhook_deliveries (id, delivery_id, tenant_id, endpoint_id, event_id, event_type,
    attempt, status_code, outcome, latency_ms, error, reason, trace_id, attempted_at)`)

// DeliveriesByTrace is every attempt of a trace, for an SRE following a
// trace id from the tracing backend to the delivery log.
var DeliveriesByTrace = register("webhooks.deliveries_by_trace", `
SELECT attempted_at, tenant_id, endpoint_id, delivery_id, attempt, outcome, status_code, reason, error
FROM webhook_deliveries
WHERE trace_id = ?
ORDER BY attempted_at, attempt
LIMIT 1 BY id`)

// --- partner portal and operator console (web) -----------------------------

// The portal's delivery pages read the delivery log (one row per attempt,
// written at least once: rows are de-duplicated by id before anything is
// counted). A delivery's status is the outcome of its latest attempt, by
// time then attempt number (two attempts may share a second).
var (
	// UIDeliveries lists a tenant's deliveries with an attempt in
	// [from, to), newest first; bound: tenant id, from, to ('YYYY-MM-DD
	// hh:mm:ss' UTC), event type twice ("" for any), status twice ("" for
	// any), limit.
	UIDeliveries = register("ui.deliveries", `
SELECT delivery_id, any(endpoint_id), any(event_id), any(event_type),
    argMax(outcome, k) AS status, max(attempt), argMax(status_code, k),
    min(attempted_at), max(attempted_at) AS last_at, count()
FROM (
  SELECT id, delivery_id, endpoint_id, event_id, event_type, outcome, attempt, status_code, attempted_at,
      toUInt64(toUnixTimestamp(attempted_at)) * 100000 + attempt AS k
  FROM webhook_deliveries
  WHERE tenant_id = ? AND attempted_at >= toDateTime(?, 'UTC') AND attempted_at < toDateTime(?, 'UTC')
    AND (? = '' OR event_type = ?)
  LIMIT 1 BY id
) AS attempts
GROUP BY delivery_id
HAVING ? = '' OR status = ?
ORDER BY last_at DESC, delivery_id
LIMIT ?`)
	// UIDeliveryAttempts is every attempt of one delivery of one tenant,
	// oldest first; bound: tenant id, delivery id.
	UIDeliveryAttempts = register("ui.delivery_attempts", `
SELECT attempt, attempted_at, outcome, status_code, latency_ms, error, reason, trace_id, endpoint_id, event_id, event_type
FROM webhook_deliveries
WHERE tenant_id = ? AND delivery_id = ?
ORDER BY attempted_at, attempt
LIMIT 1 BY id`)
	// UIDeliveryStatus is the latest outcome of each of a set of
	// deliveries (the DLQ pages show what became of a dead letter); bound:
	// tenant id twice ("" for every tenant), the delivery ids as a
	// clickhouse.GroupSet.
	UIDeliveryStatus = register("ui.delivery_status", `
SELECT delivery_id, argMax(outcome, k), max(attempted_at)
FROM (
  SELECT id, delivery_id, outcome, attempted_at,
      toUInt64(toUnixTimestamp(attempted_at)) * 100000 + attempt AS k
  FROM webhook_deliveries
  WHERE (? = '' OR tenant_id = ?) AND delivery_id IN ?
  LIMIT 1 BY id
) AS attempts
GROUP BY delivery_id
ORDER BY delivery_id`)
)

// --- demo scenario -----------------------------------------------------------

var (
	// DemoDeliveryOutcomes counts deliveries per tenant and outcome for a set
	// of tenants (has(?, tenant_id) binds a []string as an array).
	DemoDeliveryOutcomes = register("demo.delivery_outcomes", `
SELECT tenant_id, outcome, uniqExact(delivery_id)
FROM webhook_deliveries
WHERE has(?, tenant_id)
GROUP BY tenant_id, outcome`)
	// DemoFirstTrace is a tenant's delivered attempt with a trace, a retried
	// one (the highest attempt number) first: its trace shows the retry.
	DemoFirstTrace = register("demo.first_trace", `
SELECT trace_id, delivery_id
FROM webhook_deliveries
WHERE tenant_id = ? AND outcome = ? AND trace_id != ''
ORDER BY attempt DESC, attempted_at, id
LIMIT 1`)
)

// --- ROI (processors/attribution/roi) ----------------------------------------

// ROISource picks the tables an ROI query reads.
type ROISource int

const (
	// ROIRollups reads roi_daily (the serving path).
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
	Model   bool // AND model = ? (attribution and the rollup only)
}

var (
	roiRollup                  = map[ROIFilter]Statement{}
	roiAttr, roiCost, roiLeads = map[ROIFilter]Statement{}, map[ROIFilter]Statement{}, map[ROIFilter]Statement{}
)

// ROIRollup reads every ROI input of a window from roi_daily in one query:
// per partner and model revenue, conversions, new customers, customers
// (distinct users with a credited non-refund conversion), cost and leads
// (distinct users who touched the partner); bound: from day, to day
// ('YYYY-MM-DD'), then partner id and model as the filter says. A partner
// is listed when it has an attribution, a cost or a lead in the window.
func ROIRollup(f ROIFilter) Statement { return roiRollup[f] }

// ROIRawAttribution sums revenue, conversions and new customers per partner
// and model over a window from the raw attributions (argMax by version per
// id); bound as ROIRollup.
func ROIRawAttribution(f ROIFilter) Statement { return roiAttr[f] }

// ROIRawCost sums cost per partner over a window (model is ignored).
func ROIRawCost(f ROIFilter) Statement { return roiCost[ROIFilter{Partner: f.Partner}] }

// ROIRawLeads counts distinct touched users per partner over a window
// (model is ignored).
func ROIRawLeads(f ROIFilter) Statement { return roiLeads[ROIFilter{Partner: f.Partner}] }

// The window's distinct users (customers, leads) are the entries whose day
// is in the window and whose previous day is before it (see 0204).
const roiRollupTemplate = `
WITH toDate(?) AS from_day, toDate(?) AS to_day
SELECT partner_id, model, sum(revenue), sum(conversions), sum(new_customers),
    toUInt64(sumIf(customers, prev_day < from_day)), sum(cost), toUInt64(sumIf(leads, prev_day < from_day))
FROM roi_daily
WHERE model IN ` + Models + ` AND day >= from_day AND day <= to_day __PARTNER__ __MODEL__
GROUP BY partner_id, model
HAVING sum(attributions) != 0 OR sum(costs) != 0 OR sumIf(leads, prev_day < from_day) != 0`

// The raw queries de-duplicate per record id before summing: argMax(…,
// version) keeps the latest attribution of a (conversion, model, partner),
// any() collapses duplicate cost rows, uniqExact counts users once.
const (
	roiRawAttr = `
SELECT partner_id, model, sum(r), sum(c), sum(n), uniqExactIf(u, c > 0 AND k != 'refund')
FROM (
  SELECT partner_id, model, id, any(user_id) AS u, any(kind) AS k,
         argMax(revenue, version) AS r, argMax(credit, version) AS c, argMax(new_customer, version) AS n
  FROM attributions
  WHERE toDate(converted_at) >= toDate(?) AND toDate(converted_at) <= toDate(?) __PARTNER__ __MODEL__
  GROUP BY partner_id, model, id
)
GROUP BY partner_id, model`
	roiRawCost = `
SELECT partner_id, sum(a)
FROM (
  SELECT partner_id, id, any(amount_base) AS a FROM costs
  WHERE toDate(occurred_at) >= toDate(?) AND toDate(occurred_at) <= toDate(?) __PARTNER__
  GROUP BY partner_id, id
)
GROUP BY partner_id`
	roiRawLeads = `
SELECT partner_id, uniqExact(user_id)
FROM touchpoints
WHERE toDate(occurred_at) >= toDate(?) AND toDate(occurred_at) <= toDate(?) __PARTNER__
GROUP BY partner_id`
)

func init() {
	for _, partner := range []bool{false, true} {
		f := ROIFilter{Partner: partner}
		roiCost[f] = register(roiName("cost.raw", f), fill(roiRawCost, f))
		roiLeads[f] = register(roiName("leads.raw", f), fill(roiRawLeads, f))
		for _, model := range []bool{false, true} {
			f := ROIFilter{Partner: partner, Model: model}
			roiAttr[f] = register(roiName("attribution.raw", f), fill(roiRawAttr, f))
			roiRollup[f] = register(roiName("rollup", f), fill(roiRollupTemplate, f))
		}
	}
}

func roiName(what string, f ROIFilter) string {
	n := "roi." + what
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
