-- 0203_attribution_views_aliased: re-creates partner_roi_daily with aliased
-- joins. On an 18.16 database where the first text of 0201 ran (no aliases)
-- this replaces the view with the corrected one; where the corrected 0201
-- ran, it replaces the view with the same definition. A view holds no data,
-- so dropping and re-creating it loses nothing; readers in between see
-- "table doesn't exist" for an instant, never wrong numbers.
-- (DROP TABLE, not DROP VIEW: 18.16 has no DROP VIEW; both drop a view.)

DROP TABLE IF EXISTS partner_roi_daily;

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
) AS attributed
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
        ) AS spent
        ALL FULL OUTER JOIN
        (
            SELECT partner_id, day, uniqExactMerge(users) AS leads FROM leads_daily GROUP BY partner_id, day
        ) AS touched
        USING (partner_id, day)
    )
    ARRAY JOIN ['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based'] AS model
) AS costs_and_leads
USING (partner_id, model, day);
