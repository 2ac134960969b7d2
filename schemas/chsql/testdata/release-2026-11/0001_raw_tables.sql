-- 0001_raw_tables: the raw tables the attribution processor writes, one row
-- per Kafka record. Later migrations add materialized views over them.
--
-- Runs unchanged on ClickHouse 18.16 and 24+: CREATE TABLE IF NOT EXISTS, the
-- MergeTree syntax with PARTITION BY / ORDER BY, Decimal, DateTime('UTC');
-- no TTL, LowCardinality, DateTime64, Map or SimpleAggregateFunction.
--
-- Delivery is at-least-once: a replayed batch inserts rows again with the
-- same id. ReplacingMergeTree(ingested_at) collapses rows with the same
-- ORDER BY key (which ends in id, and whose other columns are part of the
-- record, so duplicates always share it) to the latest ingested one at merge
-- time. Until a merge, queries must use FINAL or count uniqExact(id).
--
-- Times are whole seconds in UTC. Amounts are Decimal(18,4) in the record's
-- currency; amount_base is the same amount converted to the configured base
-- currency at ingestion. Every column has a default, but writers name every
-- column in their INSERT (clickhouse-go v2 batches need that on 18.16).

CREATE TABLE IF NOT EXISTS touchpoints (
    id            String,
    user_id       String,
    partner_id    String,
    source        String,
    utm_source    String,
    utm_medium    String,
    utm_campaign  String,
    referrer      String,
    region        String,
    trace_id      String,
    occurred_at   DateTime('UTC'),
    ingested_at   DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (partner_id, user_id, id);

CREATE TABLE IF NOT EXISTS conversions (
    id            String,
    user_id       String,
    kind          String,
    amount        Decimal(18, 4),
    currency      String,
    amount_base   Decimal(18, 4),
    new_customer  UInt8,
    refund_of     String,
    occurred_at   DateTime('UTC'),
    ingested_at   DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (user_id, id);

CREATE TABLE IF NOT EXISTS costs (
    id            String,
    partner_id    String,
    amount        Decimal(18, 4),
    currency      String,
    amount_base   Decimal(18, 4),
    category      String,
    occurred_at   DateTime('UTC'),
    ingested_at   DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (partner_id, id);

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id            String,
    delivery_id   String,
    tenant_id     String,
    endpoint_id   String,
    event_id      String,
    event_type    String,
    attempt       UInt16,
    status_code   UInt16,
    outcome       String,
    latency_ms    Float64,
    error         String,
    trace_id      String,
    attempted_at  DateTime('UTC'),
    ingested_at   DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(attempted_at)
ORDER BY (tenant_id, endpoint_id, id);
