// Package schemas owns every contract of partners-engine: the Go types of the
// records that cross Kafka topics, their JSON Schemas (json/*.schema.json),
// the examples the contract tests validate (examples/), the ClickHouse
// migrations (clickhouse/migrations/*.sql) and the OpenAPI spec of the admin
// and analytics API (openapi/).
//
// Evolution rule: within v1 only additive, optional changes are allowed (a new
// optional field, a new enum value consumers may ignore). Anything else — a
// removed or renamed field, a changed type or meaning, a new required field —
// is a breaking change and gets a new versioned topic (partners.events.v2) and
// new schema files, with both versions produced during the migration.
package schemas

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// SchemaVersion is the version every v1 record carries in schema_version.
const SchemaVersion = "1"

// Topic names. Keys and cleanup policies are in DESIGN.md.
const (
	TopicTenants     = "partners.tenants.v1"
	TopicEvents      = "partners.events.v1"
	TopicRetryPrefix = "partners.webhooks.retry." // + attempt number, 1-based
	TopicDLQ         = "partners.webhooks.dlq"
	TopicDLQIndex    = "partners.webhooks.dlq.index" // compacted: the state of every dead letter, by key
	TopicFIFO        = "partners.webhooks.fifo"      // deliveries of ordered endpoints, keyed by endpoint id
	TopicDeliveries  = "partners.deliveries.v1"
	TopicTouchpoints = "partners.touchpoints.v1"
	TopicConversions = "partners.conversions.v1"
	TopicCosts       = "partners.costs.v1"
	TopicAttrDLQ     = "partners.attribution.dlq"
	TopicTenantsDLQ  = "partners.tenants.dlq" // compacted: undecodable tenant records, by position
	TopicAudit       = "partners.audit.v1"
)

// Event is a product event published on partners.events.v1 and fanned out to
// partner webhooks. ID is the producer's deterministic id: publishing the same
// event twice with the same id is one event.
type Event struct {
	SchemaVersion string          `json:"schema_version"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Source        string          `json:"source,omitempty"`
	OccurredAt    time.Time       `json:"occurred_at"`
	TenantID      string          `json:"tenant_id,omitempty"` // set: deliver to this tenant only
	Data          json.RawMessage `json:"data"`
}

// Touchpoint sources, as in partner.attribution.touchpoint_sources.
const (
	SourceUTM      = "utm"
	SourceReferral = "referral_header"
	SourceAPIKey   = "api_key"
)

// Touchpoint records that a user interacted with a partner. Keyed by user id.
type Touchpoint struct {
	SchemaVersion string    `json:"schema_version"`
	ID            string    `json:"id"`
	UserID        string    `json:"user_id"`
	PartnerID     string    `json:"partner_id"`
	Source        string    `json:"source"`
	UTMSource     string    `json:"utm_source,omitempty"`
	UTMMedium     string    `json:"utm_medium,omitempty"`
	UTMCampaign   string    `json:"utm_campaign,omitempty"`
	Referrer      string    `json:"referrer,omitempty"`
	Region        string    `json:"region,omitempty"`
	OccurredAt    time.Time `json:"occurred_at"`
	TraceID       string    `json:"trace_id,omitempty"`
}

// Conversion kinds. A refund is a negative conversion that reverses the
// credit of the conversion it refers to.
const (
	ConversionPurchase = "purchase"
	ConversionSignup   = "signup"
	ConversionRefund   = "refund"
)

// Conversion is a revenue event of a user. Keyed by user id.
type Conversion struct {
	SchemaVersion string          `json:"schema_version"`
	ID            string          `json:"id"`
	UserID        string          `json:"user_id"`
	Kind          string          `json:"kind"`
	Amount        decimal.Decimal `json:"amount"`
	Currency      string          `json:"currency"`
	NewCustomer   bool            `json:"new_customer,omitempty"`
	RefundOf      string          `json:"refund_of,omitempty"`
	OccurredAt    time.Time       `json:"occurred_at"`
}

// Cost is money spent on a partner (commission, fees, MDF). Keyed by partner id.
type Cost struct {
	SchemaVersion string          `json:"schema_version"`
	ID            string          `json:"id"`
	PartnerID     string          `json:"partner_id"`
	Amount        decimal.Decimal `json:"amount"`
	Currency      string          `json:"currency"`
	Category      string          `json:"category,omitempty"`
	OccurredAt    time.Time       `json:"occurred_at"`
}

// Delivery outcomes of one webhook attempt.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry"    // retryable failure, moved to the next retry topic
	OutcomeFailed    = "failed"   // permanent failure or attempts exhausted, moved to the DLQ
	OutcomeDisabled  = "disabled" // 410 Gone: endpoint disabled
	OutcomeSkipped   = "skipped"  // no longer written: a held delivery makes no attempt and is not logged
)

// DeliveryAttempt is one HTTP attempt at one webhook, on partners.deliveries.v1.
// DeliveryID is the Standard Webhooks webhook-id, derived from (event id,
// endpoint id): the same on every retry and replay.
type DeliveryAttempt struct {
	SchemaVersion string  `json:"schema_version"`
	ID            string  `json:"id"` // delivery id + "/" + attempt: unique per attempt
	DeliveryID    string  `json:"delivery_id"`
	TenantID      string  `json:"tenant_id"`
	EndpointID    string  `json:"endpoint_id"`
	EventID       string  `json:"event_id"`
	EventType     string  `json:"event_type"`
	Attempt       int     `json:"attempt"`
	StatusCode    int     `json:"status_code"`
	Outcome       string  `json:"outcome"`
	LatencyMS     float64 `json:"latency_ms"`
	Error         string  `json:"error,omitempty"`
	// Reason classifies a failed attempt (connection_refused, dns_failure,
	// timeout, tls_error, connection_error, blocked_address, http_status, …);
	// empty when delivered.
	Reason      string    `json:"reason,omitempty"`
	TraceID     string    `json:"trace_id,omitempty"`
	AttemptedAt time.Time `json:"attempted_at"`
}

// Limits of what a dead letter copies from the record it reports (key,
// reason text), so that it always fits a Kafka record, whatever the record.
const (
	MaxDeadLetterKeyBytes    = 1 << 10
	MaxDeadLetterReasonBytes = 1 << 10
)

// TruncateUTF8 cuts s to at most n bytes on a rune boundary.
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// DeadLetter is a record on partners.webhooks.dlq (or partners.attribution.dlq
// for malformed attribution input). Payload keeps the original bytes so a
// replay sends exactly what the first attempt sent.
type DeadLetter struct {
	SchemaVersion string `json:"schema_version"`
	DeliveryID    string `json:"delivery_id,omitempty"`
	TenantID      string `json:"tenant_id,omitempty"`
	EndpointID    string `json:"endpoint_id,omitempty"`
	EventID       string `json:"event_id,omitempty"`
	EventType     string `json:"event_type,omitempty"`
	Attempts      int    `json:"attempts"`
	LastStatus    int    `json:"last_status,omitempty"`
	LastError     string `json:"last_error,omitempty"`
	Reason        string `json:"reason"`
	// ReasonCode is Reason's class, one of a closed set (see
	// schemas/json/dead-letter.v1.schema.json): what happened, for
	// filtering and alerting.
	ReasonCode  string `json:"reason_code,omitempty"`
	SourceTopic string `json:"source_topic,omitempty"`
	// SourcePartition and SourceOffset locate the record in SourceTopic
	// (dead letters of input that could not be handled).
	SourcePartition *int32          `json:"source_partition,omitempty"`
	SourceOffset    *int64          `json:"source_offset,omitempty"`
	TraceID         string          `json:"trace_id,omitempty"`
	FirstAttemptAt  time.Time       `json:"first_attempt_at,omitempty,omitzero"`
	LastAttemptAt   time.Time       `json:"last_attempt_at,omitempty,omitzero"`
	Payload         json.RawMessage `json:"payload,omitempty"`
	Raw             []byte          `json:"raw,omitempty"` // undecodable input, base64 in JSON
	// PayloadKind says what Payload holds: "body" (the bytes sent, the
	// default) or "event" (the event, when no body could be rendered: a
	// replay filters and renders it with the endpoint's current settings).
	PayloadKind string `json:"payload_kind,omitempty"`
	// Replays counts the replays of this delivery before it failed again.
	Replays int `json:"replays,omitempty"`
	// PayloadBytes and PayloadSHA256 describe the original record's value;
	// Truncated says Raw holds only its first bytes (a record too large to
	// copy whole into a dead letter).
	PayloadBytes  int    `json:"payload_bytes,omitempty"`
	PayloadSHA256 string `json:"payload_sha256,omitempty"`
	Truncated     bool   `json:"truncated,omitempty"`
}
