-- 0205_webhook_delivery_reason: a typed reason for every failed attempt in
-- the delivery log, the same code as the `reason` of the
-- partners.deliveries.v1 record and of the dead letter (connection_refused,
-- dns_failure, timeout, tls_error, blocked_address, http_status,
-- breaker_open, filter, render, …; processors/webhooks/reason.go). Empty for
-- a delivered attempt, and for the rows written before this migration (their
-- reason is only in `error`).
--
-- ALTER TABLE … ADD COLUMN has no IF NOT EXISTS on 18.16: the migrator counts
-- an ADD COLUMN whose column already exists as applied (internal/chdb). In
-- cluster mode the ALTER runs on the local tables and the Distributed table is
-- created again over them (schemas/chsql/cluster.go).

ALTER TABLE webhook_deliveries
    ADD COLUMN reason String DEFAULT '' AFTER error;
