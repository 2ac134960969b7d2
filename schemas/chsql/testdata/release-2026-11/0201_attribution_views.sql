-- 0201_attribution_views: plain views for analysts, no -Merge combinators
-- needed. Each side is aggregated on its own before the join, so a cost
-- row never multiplies revenue (the seed's bug).

-- One row per (partner, model, day) with attributed revenue, conversions
-- (fractional credit), new customers (fractional credit) and, per day,
-- the partner's cost and leads (distinct users touched that day; do not
-- sum leads over days — use uniqExactMerge(users) on leads_daily for a
-- window, as `partners roi` does).
CREATE VIEW IF NOT EXISTS partner_roi_daily AS
SELECT
    partner_id,
    model,
    day,
    revenue,
    conversions,
    new_customers,
    cost,
    leads
FROM
(
    SELECT
        partner_id,
        model,
        day,
        sum(r) AS revenue,
        sum(c) AS conversions,
        sum(n) AS new_customers
    FROM
    (
        SELECT
            partner_id,
            model,
            day,
            conversion_id,
            argMaxMerge(revenue) AS r,
            argMaxMerge(credit) AS c,
            argMaxMerge(new_customer) AS n
        FROM attribution_daily
        GROUP BY partner_id, model, day, conversion_id
    )
    GROUP BY partner_id, model, day
)
ALL FULL OUTER JOIN
(
    SELECT partner_id, model, day, cost, leads
    FROM
    (
        SELECT partner_id, day, cost, leads
        FROM
        (
            SELECT partner_id, day, sum(a) AS cost
            FROM (SELECT partner_id, day, id, anyMerge(amount) AS a FROM costs_daily GROUP BY partner_id, day, id)
            GROUP BY partner_id, day
        )
        ALL FULL OUTER JOIN
        (
            SELECT partner_id, day, uniqExactMerge(users) AS leads FROM leads_daily GROUP BY partner_id, day
        )
        USING (partner_id, day)
    )
    ARRAY JOIN ['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based'] AS model
)
USING (partner_id, model, day);
