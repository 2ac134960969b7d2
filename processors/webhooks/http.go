package webhooks

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/httpx"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// API serves the DLQ and webhook-test routes of the admin API.
type API struct {
	P        *Processor
	Producer *kgo.Client // replays are produced with it
}

func filterFrom(w http.ResponseWriter, r *http.Request, withLimit bool) (DLQFilter, bool) {
	q := r.URL.Query()
	f := DLQFilter{Tenant: q.Get("tenant"), EventType: q.Get("event_type")}
	since, err := ParseSince(q.Get("since"), time.Now())
	if err != nil {
		problem.Error(w, r, http.StatusBadRequest, err.Error())
		return f, false
	}
	f.Since = since
	if withLimit {
		f.Limit = 100
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 10000 {
				problem.Error(w, r, http.StatusBadRequest, "limit must be an integer between 1 and 10000")
				return f, false
			}
			f.Limit = n
		}
	}
	return f, true
}

// dlqListItem is a dead letter as listed: no payload or raw bytes (they may
// hold personal data; replay carries them without showing them).
type dlqListItem struct {
	DeliveryID     string     `json:"delivery_id,omitempty"`
	TenantID       string     `json:"tenant_id,omitempty"`
	EndpointID     string     `json:"endpoint_id,omitempty"`
	EventID        string     `json:"event_id,omitempty"`
	EventType      string     `json:"event_type,omitempty"`
	Attempts       int        `json:"attempts"`
	LastStatus     int        `json:"last_status,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	Reason         string     `json:"reason"`
	TraceID        string     `json:"trace_id,omitempty"`
	FirstAttemptAt *time.Time `json:"first_attempt_at,omitempty"`
	LastAttemptAt  *time.Time `json:"last_attempt_at,omitempty"`
	Partition      int32      `json:"partition"`
	Offset         int64      `json:"offset"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// List serves GET /api/v1/dlq.
func (a *API) List(w http.ResponseWriter, r *http.Request) {
	f, ok := filterFrom(w, r, true)
	if !ok {
		return
	}
	es, err := a.P.ListDLQ(r.Context(), f)
	if err != nil {
		problem.Error(w, r, http.StatusServiceUnavailable, "reading the DLQ failed: "+err.Error())
		return
	}
	out := make([]dlqListItem, 0, len(es))
	for _, e := range es {
		out = append(out, dlqListItem{DeliveryID: e.DeliveryID, TenantID: e.TenantID, EndpointID: e.EndpointID,
			EventID: e.EventID, EventType: e.EventType, Attempts: e.Attempts, LastStatus: e.LastStatus,
			LastError: e.LastError, Reason: e.Reason, TraceID: e.TraceID, FirstAttemptAt: timePtr(e.FirstAttemptAt),
			LastAttemptAt: timePtr(e.LastAttemptAt), Partition: e.Partition, Offset: e.Offset})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"dead_letters": out})
}

// Replay serves POST /api/v1/dlq/replay.
func (a *API) Replay(w http.ResponseWriter, r *http.Request) {
	f, ok := filterFrom(w, r, false)
	if !ok {
		return
	}
	n, err := a.P.ReplayDLQ(r.Context(), f, a.Producer)
	if err != nil {
		problem.Error(w, r, http.StatusServiceUnavailable, "replay failed: "+err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]int{"replayed": n})
}

// TestResult is the outcome of one test delivery.
type TestResult struct {
	EndpointID string  `json:"endpoint_id"`
	WebhookID  string  `json:"webhook_id"`
	Outcome    string  `json:"outcome"`
	StatusCode int     `json:"status_code,omitempty"`
	Error      string  `json:"error,omitempty"`
	LatencyMS  float64 `json:"latency_ms"`
}

// Test serves POST /api/v1/partners/webhooks/test: a signed partner.test
// event to each enabled endpoint of the calling tenant, once, no retries.
func (a *API) Test(w http.ResponseWriter, r *http.Request) {
	t, ok := authctx.TenantFrom(r.Context())
	if !ok {
		problem.Error(w, r, http.StatusForbidden, "a tenant API key is required")
		return
	}
	results := a.P.TestDelivery(r.Context(), t)
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"results": results})
}

// TestDelivery sends a signed partner.test event to every enabled endpoint
// of t and returns the outcomes.
func (p *Processor) TestDelivery(ctx context.Context, t *schemas.Tenant) []TestResult {
	now := time.Now().UTC()
	ev := schemas.Event{SchemaVersion: schemas.SchemaVersion, ID: "evt_test_" + randomHex(8), Type: "partner.test",
		Source: "partners-engine", OccurredAt: now, TenantID: t.ID,
		Data: json.RawMessage(`{"message":"This is a test webhook from partners-engine."}`)}
	out := []TestResult{}
	for _, ep := range t.Endpoints {
		if ep.Disabled {
			continue
		}
		id := WebhookID(ev.ID, ep.ID)
		res := TestResult{EndpointID: ep.ID, WebhookID: id}
		body, err := Render(&ev, ep)
		if err != nil {
			res.Outcome, res.Error = schemas.OutcomeFailed, err.Error()
			out = append(out, res)
			continue
		}
		j := &job{tenant: t, endpoint: ep, task: Task{DeliveryID: id, TenantID: t.ID, EndpointID: ep.ID,
			EventID: ev.ID, EventType: ev.Type, Body: body}}
		o := p.attempt(ctx, j, "")
		res.Outcome, res.StatusCode, res.Error = o.result, o.att.StatusCode, o.att.Err
		res.LatencyMS = float64(o.att.Latency.Microseconds()) / 1000
		out = append(out, res)
	}
	return out
}
