package webhooks

// Reason says what happened to a delivery: why an attempt failed, why a
// delivery is held, or why it was dead-lettered. It is a closed set (it
// labels metrics and fills reason_code in dead letters and the delivery
// log); the human text next to it carries the detail.
type Reason string

// Attempt failures.
const (
	ReasonConnRefused Reason = "connection_refused"
	ReasonDNS         Reason = "dns_failure"
	ReasonTimeout     Reason = "timeout"
	ReasonTLS         Reason = "tls_error"
	ReasonConnection  Reason = "connection_error" // reset, EOF, unreachable network, …
	ReasonBlocked     Reason = "blocked_address"  // refused by the SSRF guard
	ReasonHTTPStatus  Reason = "http_status"
	ReasonInvalidURL  Reason = "invalid_url"
	ReasonNoSecret    Reason = "no_active_secret"
	ReasonGone        Reason = "endpoint_gone" // 410: the endpoint is disabled
)

// Holds: no attempt is made and none is consumed.
const (
	ReasonBreakerOpen Reason = "breaker_open"
	ReasonRetryAfter  Reason = "retry_after"
	ReasonSaturated   Reason = "endpoint_saturated"
	ReasonRecovering  Reason = "recovering" // the drain rate after the breaker closed
)

// Rejections: the delivery cannot be made as it stands.
const (
	ReasonFilter           Reason = "filter_error"
	ReasonRender           Reason = "render_error"
	ReasonPayloadTooLarge  Reason = "payload_too_large"
	ReasonTenantRemoved    Reason = "tenant_removed"
	ReasonTenantSuspended  Reason = "tenant_suspended"
	ReasonEndpointRemoved  Reason = "endpoint_removed"
	ReasonEndpointDisabled Reason = "endpoint_disabled"
	ReasonMalformedEvent   Reason = "malformed_event"
	ReasonUnknownType      Reason = "unknown_event_type"
	ReasonOversizedEvent   Reason = "oversized_event"
	ReasonMalformedRecord  Reason = "malformed_record" // an undecodable retry or FIFO record
)

// Reasons lists every reason (docs, tests).
var Reasons = []Reason{
	ReasonConnRefused, ReasonDNS, ReasonTimeout, ReasonTLS, ReasonConnection, ReasonBlocked, ReasonHTTPStatus,
	ReasonInvalidURL, ReasonNoSecret, ReasonGone,
	ReasonBreakerOpen, ReasonRetryAfter, ReasonSaturated, ReasonRecovering,
	ReasonFilter, ReasonRender, ReasonPayloadTooLarge, ReasonTenantRemoved, ReasonTenantSuspended,
	ReasonEndpointRemoved, ReasonEndpointDisabled, ReasonMalformedEvent, ReasonUnknownType, ReasonOversizedEvent,
	ReasonMalformedRecord,
}

// describe is the words for a hold reason.
func (r Reason) describe() string {
	switch r {
	case ReasonBreakerOpen:
		return "circuit breaker open"
	case ReasonRetryAfter:
		return "waiting for the endpoint's Retry-After"
	case ReasonSaturated:
		return "endpoint saturated (bulkhead full, no response completing)"
	case ReasonRecovering:
		return "endpoint recovering (backlog drain rate)"
	}
	return string(r)
}

// unreachable reports whether r means the endpoint could not be reached at
// all; the test route answers all of these with one generic error, so it
// cannot be used to map internal hosts and ports.
func (r Reason) unreachable() bool {
	switch r {
	case ReasonConnRefused, ReasonDNS, ReasonTimeout, ReasonTLS, ReasonConnection, ReasonBlocked, ReasonInvalidURL:
		return true
	}
	return false
}
