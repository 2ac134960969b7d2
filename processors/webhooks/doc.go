// Package webhooks owns the webhook fan-out of partners-engine: it consumes
// product events from partners.events.v1, fans each out to every subscribed
// endpoint (an index by event type, CEL filter), renders the per-endpoint
// payload (pinned payload version + bounded declarative field mapping),
// signs it per Standard Webhooks with every active secret and delivers it
// over an SSRF-guarded HTTP client. Failures move through the retry topics
// partners.webhooks.retry.<n> to the DLQ partners.webhooks.dlq, each move a
// Kafka transaction with the offset commit (internal/kafka.TxnStage); every
// attempt is logged on partners.deliveries.v1 and sunk into ClickHouse; the
// DLQ is indexed in the compacted partners.webhooks.dlq.index for listing,
// replay and recovery.
//
// One job per file:
//
//	fanout.go     event → deliveries (subscription index by event type)
//	engine.go     the stages: schedule a delivery, re-read its tenant, try it, route the outcome
//	fifo.go       ordered endpoints: one message at a time
//	policy.go     outcome → done | retry | hold | dead-letter (pure), with a typed Reason
//	breaker.go    per-endpoint gate: circuit breaker, Retry-After, recovery drain rate
//	bulkhead.go   concurrency per endpoint, per tenant and overall
//	attempt.go    one traced attempt; client.go the HTTP client, send and classify
//	records.go    the records an outcome produces (attempt log, retry, DLQ, index)
//	dlqindex.go   the DLQ index: listing with filters and pages, depth gauge
//	replay.go     replay and recover, transactional and idempotent
//	commands.go   side effects of outcomes (disable an endpoint on 410)
//	http.go       the admin and test routes
//	payload.go, sign.go, sink.go   rendering, signing, the delivery log
package webhooks
