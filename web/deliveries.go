package web

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// Delivery is one webhook (event × endpoint) of a tenant, summarised over
// its attempts in the listed window.
type Delivery struct {
	ID         string
	EndpointID string
	EventID    string
	EventType  string
	Status     string // outcome of the latest attempt
	Attempts   uint16 // highest attempt number
	LastCode   uint16
	FirstAt    time.Time
	LastAt     time.Time
	Rows       uint64
}

// Attempt is one attempt of a delivery.
type Attempt struct {
	Attempt    uint16
	At         time.Time
	Outcome    string
	StatusCode uint16
	LatencyMS  float64
	Error      string
	ErrorClass string
	TraceID    string
	EndpointID string
	EventID    string
	EventType  string
}

// DeliveryQuery selects a tenant's deliveries.
type DeliveryQuery struct {
	TenantID  string
	From, To  time.Time
	EventType string
	Status    string
	Limit     int
}

// deliveryStatuses are the outcomes a delivery's latest attempt can have.
var deliveryStatuses = []string{"delivered", "retry", "failed", "disabled", "skipped"}

func chTime(t time.Time) string { return t.UTC().Format(time.DateTime) }

func (s *Server) listDeliveries(ctx context.Context, q DeliveryQuery) ([]Delivery, error) {
	conn := s.opt.ClickHouse()
	if conn == nil {
		return nil, fmt.Errorf("%w: ClickHouse is not reachable from this process yet", ErrUnavailable)
	}
	rows, err := conn.Query(ctx, chsql.UIDeliveries.SQL, q.TenantID, chTime(q.From), chTime(q.To),
		q.EventType, q.EventType, q.Status, q.Status, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", chsql.UIDeliveries.Name, err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		var d Delivery
		if err := rows.Scan(&d.ID, &d.EndpointID, &d.EventID, &d.EventType, &d.Status, &d.Attempts, &d.LastCode,
			&d.FirstAt, &d.LastAt, &d.Rows); err != nil {
			return nil, fmt.Errorf("%s: %w", chsql.UIDeliveries.Name, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *Server) attempts(ctx context.Context, tenantID, deliveryID string) ([]Attempt, error) {
	conn := s.opt.ClickHouse()
	if conn == nil {
		return nil, fmt.Errorf("%w: ClickHouse is not reachable from this process yet", ErrUnavailable)
	}
	rows, err := conn.Query(ctx, chsql.UIDeliveryAttempts.SQL, tenantID, deliveryID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", chsql.UIDeliveryAttempts.Name, err)
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var a Attempt
		var reason string
		if err := rows.Scan(&a.Attempt, &a.At, &a.Outcome, &a.StatusCode, &a.LatencyMS, &a.Error, &reason, &a.TraceID,
			&a.EndpointID, &a.EventID, &a.EventType); err != nil {
			return nil, fmt.Errorf("%s: %w", chsql.UIDeliveryAttempts.Name, err)
		}
		a.ErrorClass = reasonClass(reason)
		if a.ErrorClass == "" && a.Outcome != "delivered" {
			a.ErrorClass = errorClass(a.Outcome, a.StatusCode, a.Error) // a row from before the reason column
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// deliveryStatus returns the latest outcome of each delivery id (tenantID
// "": any tenant's).
func (s *Server) deliveryStatus(ctx context.Context, tenantID string, ids []string) map[string]string {
	out := map[string]string{}
	conn := s.opt.ClickHouse()
	if conn == nil || len(ids) == 0 {
		return out
	}
	set := make([]any, len(ids))
	for i, id := range ids {
		set[i] = id
	}
	rows, err := conn.Query(ctx, chsql.UIDeliveryStatus.SQL, tenantID, tenantID, clickhouse.GroupSet{Value: set})
	if err != nil {
		s.log.Warn("delivery status not read", "err", err)
		return out
	}
	defer rows.Close()
	for rows.Next() {
		var id, outcome string
		var at time.Time
		if rows.Scan(&id, &outcome, &at) == nil {
			out[id] = outcome
		}
	}
	return out
}

// reasonClass names an attempt's typed reason (webhook_deliveries.reason,
// the webhooks processor's reason codes) in the words errorClass uses; ""
// for none.
func reasonClass(reason string) string {
	switch reason {
	case "":
		return ""
	case "http_status":
		return "HTTP status"
	case "dns_failure":
		return "DNS failure"
	case "tls_error":
		return "TLS error"
	case "filter_error", "render_error":
		return "filter/render error"
	}
	return strings.ReplaceAll(reason, "_", " ") // connection refused, timeout, breaker open, …
}

// errorClass names what went wrong with an attempt, from what the
// delivery log records (the outcome, the HTTP status and the error text the
// webhooks processor wrote).
func errorClass(outcome string, code uint16, errText string) string {
	e := strings.ToLower(errText)
	switch {
	case outcome == "delivered":
		return ""
	case outcome == "skipped" || strings.Contains(e, "circuit") || strings.Contains(e, "breaker"):
		return "breaker open"
	case code >= 400 || strings.HasPrefix(e, "http "):
		return "HTTP status"
	case strings.Contains(e, "refused"):
		return "connection refused"
	case strings.Contains(e, "no such host") || strings.Contains(e, "dns"):
		return "DNS failure"
	case strings.Contains(e, "timeout") || strings.Contains(e, "deadline"):
		return "timeout"
	case strings.Contains(e, "tls") || strings.Contains(e, "x509") || strings.Contains(e, "certificate"):
		return "TLS error"
	case strings.Contains(e, "not allowed") || strings.Contains(e, "blocked") || strings.Contains(e, "private"):
		return "blocked address"
	case strings.Contains(e, "filter") || strings.Contains(e, "render") || strings.Contains(e, "mapping"):
		return "filter/render error"
	case e == "":
		return ""
	}
	return "connection error"
}
