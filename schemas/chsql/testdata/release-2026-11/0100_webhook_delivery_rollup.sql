-- 0100_webhook_delivery_rollup: per-minute delivery statistics per partner
-- (tenant) over webhook_deliveries, the delivery log (one row per attempt,
-- written at least once by the webhooks delivery-log sink).
--
-- webhook_delivery_stats_1m is an AggregatingMergeTree fed by a materialized
-- view at insert time. Duplicated attempt rows (a re-inserted batch) must not
-- count twice, so the counts that analysts read are uniqExact over attempt
-- ids (id = delivery_id/attempt) and delivery ids; rows_raw (countState) and
-- errors_raw (sumState) are kept as cheap raw totals that a duplicate does
-- inflate. Latency quantiles skip attempts that made no HTTP call (outcome
-- skipped: circuit open or bulkhead full).
--
-- Analysts query webhook_delivery_stats_per_minute (plain columns, no -Merge
-- combinators). Runs on ClickHouse 18.16 and 24+.

CREATE TABLE IF NOT EXISTS webhook_delivery_stats_1m (
    minute          DateTime('UTC'),
    tenant_id       String,
    rows_raw        AggregateFunction(count),
    attempts        AggregateFunction(uniqExact, String),
    deliveries      AggregateFunction(uniqExact, String),
    delivered       AggregateFunction(uniqExactIf, String, UInt8),
    failed_attempts AggregateFunction(uniqExactIf, String, UInt8),
    errors_raw      AggregateFunction(sum, UInt64),
    latency_ms      AggregateFunction(quantilesIf(0.5, 0.9, 0.99), Float64, UInt8)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS webhook_delivery_stats_1m_mv TO webhook_delivery_stats_1m AS
SELECT
    toStartOfMinute(attempted_at) AS minute,
    tenant_id,
    countState() AS rows_raw,
    uniqExactState(id) AS attempts,
    uniqExactState(delivery_id) AS deliveries,
    uniqExactIfState(delivery_id, toUInt8(outcome = 'delivered')) AS delivered,
    uniqExactIfState(id, toUInt8(outcome != 'delivered')) AS failed_attempts,
    sumState(toUInt64(outcome != 'delivered')) AS errors_raw,
    quantilesIfState(0.5, 0.9, 0.99)(latency_ms, toUInt8(outcome != 'skipped')) AS latency_ms
FROM webhook_deliveries
GROUP BY minute, tenant_id;

CREATE VIEW IF NOT EXISTS webhook_delivery_stats_per_minute AS
SELECT
    minute,
    tenant_id,
    attempts,
    deliveries,
    delivered,
    failed_attempts,
    if(attempts = 0, 0, failed_attempts / attempts) AS error_rate,
    latency[1] AS latency_p50_ms,
    latency[2] AS latency_p90_ms,
    latency[3] AS latency_p99_ms,
    rows_raw,
    errors_raw
FROM (
    SELECT
        minute,
        tenant_id,
        uniqExactMerge(attempts) AS attempts,
        uniqExactMerge(deliveries) AS deliveries,
        uniqExactIfMerge(delivered) AS delivered,
        uniqExactIfMerge(failed_attempts) AS failed_attempts,
        quantilesIfMerge(0.5, 0.9, 0.99)(latency_ms) AS latency,
        countMerge(rows_raw) AS rows_raw,
        sumMerge(errors_raw) AS errors_raw
    FROM webhook_delivery_stats_1m
    GROUP BY minute, tenant_id
);
