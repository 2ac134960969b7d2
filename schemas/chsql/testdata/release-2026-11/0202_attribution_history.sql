-- 0202_attribution_history: touchpoints ordered by user, so the attribution
-- processor's history lookups on a cache miss (WHERE user_id IN (...)) read
-- a few granules instead of scanning every touchpoint. conversions is
-- already ordered by (user_id, id). Duplicates are harmless: readers
-- de-duplicate by id.

CREATE TABLE IF NOT EXISTS touchpoints_by_user (
    user_id       String,
    id            String,
    partner_id    String,
    occurred_at   DateTime('UTC')
) ENGINE = ReplacingMergeTree()
ORDER BY (user_id, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS touchpoints_by_user_mv TO touchpoints_by_user AS
SELECT user_id, id, partner_id, occurred_at FROM touchpoints;

-- Backfill what was written before this migration (re-running it only adds
-- duplicates, which readers collapse).
INSERT INTO touchpoints_by_user (user_id, id, partner_id, occurred_at)
SELECT user_id, id, partner_id, occurred_at FROM touchpoints;
