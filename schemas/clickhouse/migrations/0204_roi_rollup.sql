-- 0204_roi_rollup: the ROI serving path becomes one coarse rollup,
-- roi_daily, at (model, day, partner) grain, written by the attribution
-- processor itself (not by materialized views) together with an ingest
-- ledger, so every effect reaches it exactly once. The argument is in
-- schemas/clickhouse/README.md ("Exactly once into the rollup").
--
-- 1. Every raw row the processor writes carries the Kafka position of the
--    record it came from (src_topic, src_partition, src_offset; '' / -1 for
--    rows written before this migration, by SQL or by a backfill). The
--    processor's history reads only rows whose position is below the ledger's
--    committed end offset of their partition, so the raw rows of a batch
--    whose rollup insert never landed are invisible to it.
-- 2. roi_daily (SummingMergeTree, unpartitioned: one INSERT is one part, and
--    a part is committed atomically) holds
--      - money rows    (model, day, partner, prev_day = 0): revenue,
--                      conversions, new_customers, cost (costs are repeated
--                      under every model), attributions (attribution rows:
--                      conversion x partner) and costs (cost records);
--      - entry rows    (model, day, partner, prev_day): customers and leads,
--                      one entry per user and day with the user's previous day
--                      in the same set (0 for the first), so the distinct
--                      users of any window [a, b] are the entries with
--                      a <= day <= b and prev_day < a;
--      - ledger rows   (model = '', day = 0, partner_id = '', prev_day = 0,
--                      src = '<topic>/<partition>'): offsets, the increments of
--                      the partition's committed end offset, summed by merges;
--                      and one '#params' row naming the model parameters the
--                      rollup was built with.
--    A batch's corrections and its ledger increments travel in the same
--    INSERT, so they land together or not at all.
-- 3. The old per-conversion rollups (attribution_daily, costs_daily,
--    leads_daily and their views) are dropped; partner_roi_daily is
--    re-created over roi_daily with the same columns and rows.
-- 4. roi_daily is backfilled from the raw tables (de-duplicated by id, latest
--    version), so an existing database gives the same ROI after `partners
--    migrate`. TRUNCATE first: a backfill interrupted half-way is redone whole
--    by the next run. Stop the processor before migrating.
--
-- ALTER TABLE … ADD COLUMN has no IF NOT EXISTS on 18.16: the migrator counts
-- an ADD COLUMN whose column already exists as applied (internal/chdb).

ALTER TABLE touchpoints
    ADD COLUMN src_topic String DEFAULT '',
    ADD COLUMN src_partition Int32 DEFAULT -1,
    ADD COLUMN src_offset Int64 DEFAULT -1;

ALTER TABLE conversions
    ADD COLUMN src_topic String DEFAULT '',
    ADD COLUMN src_partition Int32 DEFAULT -1,
    ADD COLUMN src_offset Int64 DEFAULT -1;

ALTER TABLE costs
    ADD COLUMN src_topic String DEFAULT '',
    ADD COLUMN src_partition Int32 DEFAULT -1,
    ADD COLUMN src_offset Int64 DEFAULT -1;

ALTER TABLE touchpoints_by_user
    ADD COLUMN src_topic String DEFAULT '',
    ADD COLUMN src_partition Int32 DEFAULT -1,
    ADD COLUMN src_offset Int64 DEFAULT -1;

-- The history view now carries the positions. The new view exists before the
-- old one goes, so no touchpoint misses both (a duplicate is harmless: the
-- history is read by id).
CREATE MATERIALIZED VIEW IF NOT EXISTS touchpoints_by_user_src_mv TO touchpoints_by_user AS
SELECT user_id, id, partner_id, occurred_at, src_topic, src_partition, src_offset FROM touchpoints;

DROP TABLE IF EXISTS touchpoints_by_user_mv;

CREATE TABLE IF NOT EXISTS roi_daily (
    model           String,
    day             Date,
    partner_id      String,
    prev_day        Date,
    src             String,
    revenue         Decimal(18, 4),
    conversions     Decimal(18, 4),
    new_customers   Decimal(18, 4),
    customers       Int64,
    cost            Decimal(18, 4),
    leads           Int64,
    attributions    Int64,
    costs           Int64,
    offsets         Int64
) ENGINE = SummingMergeTree()
ORDER BY (model, day, partner_id, prev_day, src)
SETTINGS index_granularity = 256;

TRUNCATE TABLE roi_daily;

-- Money: per (partner, model, day) the latest version of every attribution.
INSERT INTO roi_daily (model, day, partner_id, prev_day, src, revenue, conversions, new_customers,
    customers, cost, leads, attributions, costs, offsets)
SELECT model, day, partner_id, toDate(0), '', sum(r), sum(c), sum(n),
    toInt64(0), toDecimal64(0, 4), toInt64(0), toInt64(count()), toInt64(0), toInt64(0)
FROM
(
    SELECT partner_id, model, id, toDate(any(converted_at)) AS day,
        argMax(revenue, version) AS r, argMax(credit, version) AS c, argMax(new_customer, version) AS n
    FROM attributions
    GROUP BY partner_id, model, id
)
GROUP BY model, day, partner_id;

-- Customers: per (partner, model, user) the days of a credited (credit > 0)
-- conversion that is not a refund, each with the user's previous such day.
INSERT INTO roi_daily (model, day, partner_id, prev_day, src, revenue, conversions, new_customers,
    customers, cost, leads, attributions, costs, offsets)
SELECT model, d, partner_id, p, '', toDecimal64(0, 4), toDecimal64(0, 4), toDecimal64(0, 4),
    toInt64(count()), toDecimal64(0, 4), toInt64(0), toInt64(0), toInt64(0), toInt64(0)
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
            GROUP BY partner_id, model, id
        )
        WHERE c > 0 AND k != 'refund'
        GROUP BY partner_id, model, u
    )
)
ARRAY JOIN days AS d, prevs AS p
GROUP BY model, d, partner_id, p;

-- Cost: per (partner, day) every cost record once, under every model.
INSERT INTO roi_daily (model, day, partner_id, prev_day, src, revenue, conversions, new_customers,
    customers, cost, leads, attributions, costs, offsets)
SELECT model, day, partner_id, toDate(0), '', toDecimal64(0, 4), toDecimal64(0, 4), toDecimal64(0, 4),
    toInt64(0), sum(a), toInt64(0), toInt64(0), toInt64(count()), toInt64(0)
FROM
(
    SELECT partner_id, id, toDate(any(occurred_at)) AS day, any(amount_base) AS a
    FROM costs
    GROUP BY partner_id, id
)
ARRAY JOIN ['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based'] AS model
GROUP BY model, day, partner_id;

-- Leads: per (partner, user) the days of a touch, each with the previous one,
-- under every model. (18.16 takes one ARRAY JOIN per SELECT.)
INSERT INTO roi_daily (model, day, partner_id, prev_day, src, revenue, conversions, new_customers,
    customers, cost, leads, attributions, costs, offsets)
SELECT model, d, partner_id, p, '', toDecimal64(0, 4), toDecimal64(0, 4), toDecimal64(0, 4),
    toInt64(0), toDecimal64(0, 4), toInt64(count()), toInt64(0), toInt64(0), toInt64(0)
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
            GROUP BY partner_id, user_id
        )
    )
    ARRAY JOIN days AS d, prevs AS p
)
ARRAY JOIN ['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based'] AS model
GROUP BY model, d, partner_id, p;

-- The analysts' daily view, same columns and rows as before, over roi_daily.
-- (DROP TABLE: 18.16 has no DROP VIEW.)
DROP TABLE IF EXISTS partner_roi_daily;

CREATE VIEW IF NOT EXISTS partner_roi_daily AS
SELECT
    partner_id,
    model,
    day,
    r AS revenue,
    c AS conversions,
    n AS new_customers,
    k AS cost,
    l AS leads,
    u AS customers
FROM
(
    SELECT
        partner_id,
        model,
        day,
        sum(revenue) AS r,
        sum(conversions) AS c,
        sum(new_customers) AS n,
        sum(cost) AS k,
        toUInt64(sum(leads)) AS l,
        toUInt64(sum(customers)) AS u,
        sum(attributions) AS a,
        sum(costs) AS q
    FROM roi_daily
    WHERE model IN ('first_touch', 'last_touch', 'linear', 'time_decay', 'position_based')
    GROUP BY partner_id, model, day
)
WHERE a != 0 OR q != 0 OR l != 0;

DROP TABLE IF EXISTS attribution_daily_mv;

DROP TABLE IF EXISTS costs_daily_mv;

DROP TABLE IF EXISTS leads_daily_mv;

DROP TABLE IF EXISTS attribution_daily;

DROP TABLE IF EXISTS costs_daily;

DROP TABLE IF EXISTS leads_daily;
