-- 0200_attribution_rollups: attribution results and the ROI rollups.
--
-- attributions holds one row per conversion × attribution model × partner
-- that touched the user inside the lookback window (zero-credit partners
-- included). id = hex(sha256(conversion_id | model | partner_id))[:32] is
-- deterministic, so a replayed or duplicated record produces a row with the
-- same id and the same values. version is the number of eligible touches the
-- attribution saw: touches only ever get added, so the attribution over the
-- complete touch set has the largest version, and a late touchpoint
-- re-attributes a conversion by writing every partner's row again with a
-- larger version. Exact reads take, per id, the row of the largest version
-- (argMax(x, version)); ReplacingMergeTree(version) converges storage to
-- the same rows at merge time, it is not relied on for correctness.
--
-- The rollups are AggregatingMergeTree tables fed by materialized views at
-- insert time (no refresh interval). Their states are idempotent, so a
-- duplicated insert block never changes a total:
--   attribution_daily  per (partner, model, day, conversion): argMaxState by
--                      version of revenue / credit / new-customer credit.
--   costs_daily        per (partner, day, cost id): anyState(amount_base).
--   leads_daily        per (partner, day): uniqExactState(user_id).
-- A plain SUM state per (partner, model, day) would double-count a
-- duplicated block (18.16 has no insert deduplication for non-replicated
-- tables), so money is kept per record id inside the day and summed at read
-- time; see schemas/clickhouse/README.md.

CREATE TABLE IF NOT EXISTS attributions (
    id              String,
    conversion_id   String,
    user_id         String,
    partner_id      String,
    model           String,
    kind            String,
    version         UInt64,
    credit          Decimal(18, 4),
    revenue         Decimal(18, 4),
    new_customer    Decimal(18, 4),
    converted_at    DateTime('UTC'),
    ingested_at     DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(converted_at)
ORDER BY (partner_id, model, id);

CREATE TABLE IF NOT EXISTS attribution_daily (
    partner_id      String,
    model           String,
    day             Date,
    conversion_id   String,
    user_id         AggregateFunction(any, String),
    kind            AggregateFunction(any, String),
    revenue         AggregateFunction(argMax, Decimal(18, 4), UInt64),
    credit          AggregateFunction(argMax, Decimal(18, 4), UInt64),
    new_customer    AggregateFunction(argMax, Decimal(18, 4), UInt64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (partner_id, model, day, conversion_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS attribution_daily_mv TO attribution_daily AS
SELECT
    partner_id,
    model,
    toDate(converted_at) AS day,
    conversion_id,
    anyState(user_id) AS user_id,
    anyState(kind) AS kind,
    argMaxState(revenue, version) AS revenue,
    argMaxState(credit, version) AS credit,
    argMaxState(new_customer, version) AS new_customer
FROM attributions
GROUP BY partner_id, model, day, conversion_id;

CREATE TABLE IF NOT EXISTS costs_daily (
    partner_id      String,
    day             Date,
    id              String,
    amount          AggregateFunction(any, Decimal(18, 4))
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (partner_id, day, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS costs_daily_mv TO costs_daily AS
SELECT
    partner_id,
    toDate(occurred_at) AS day,
    id,
    anyState(amount_base) AS amount
FROM costs
GROUP BY partner_id, day, id;

CREATE TABLE IF NOT EXISTS leads_daily (
    partner_id      String,
    day             Date,
    users           AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (partner_id, day)
-- Each row holds a whole set of user ids: small granules, so reading one
-- partner's days does not deserialize 8192 sets.
SETTINGS index_granularity = 64;

CREATE MATERIALIZED VIEW IF NOT EXISTS leads_daily_mv TO leads_daily AS
SELECT
    partner_id,
    toDate(occurred_at) AS day,
    uniqExactState(user_id) AS users
FROM touchpoints
GROUP BY partner_id, day;
