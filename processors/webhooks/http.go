package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/httpx"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// errNoTenant is the test route's answer without a tenant.
var errNoTenant = errors.New("a tenant API key is required")

// API serves the DLQ and webhook-test routes of the admin API.
type API struct {
	P *Processor
}

// filterFrom reads the DLQ filter of a request: tenant, endpoint,
// event_type, reason, status, since, until, delivery_id (repeatable), and
// for listings limit and page_token.
func filterFrom(w http.ResponseWriter, r *http.Request, listing bool) (DLQFilter, bool) {
	q := r.URL.Query()
	f := DLQFilter{Tenant: q.Get("tenant"), Endpoint: q.Get("endpoint"), EventType: q.Get("event_type"),
		Reason: q.Get("reason"), Status: q.Get("status"), DeliveryIDs: q["delivery_id"]}
	now := time.Now()
	var err error
	if f.Since, err = ParseSince(q.Get("since"), now); err != nil {
		problem.Error(w, r, http.StatusBadRequest, err.Error())
		return f, false
	}
	if f.Until, err = ParseSince(q.Get("until"), now); err != nil {
		problem.Error(w, r, http.StatusBadRequest, "until: "+err.Error())
		return f, false
	}
	if f.Reason != "" && !knownReason(f.Reason) {
		problem.Error(w, r, http.StatusBadRequest, "reason must be a reason code such as http_status, timeout, connection_refused or breaker_open")
		return f, false
	}
	if f.Status != "" && f.Status != "all" && !validStatus(f.Status) {
		problem.Error(w, r, http.StatusBadRequest, "status must be dead, replayed, delivered, dropped or all")
		return f, false
	}
	if listing {
		f.Limit = 100
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 10000 {
				problem.Error(w, r, http.StatusBadRequest, "limit must be an integer between 1 and 10000")
				return f, false
			}
			f.Limit = n
		}
		f.PageToken = q.Get("page_token")
	}
	return f, true
}

func knownReason(s string) bool {
	for _, r := range Reasons {
		if string(r) == s {
			return true
		}
	}
	return false
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
	ReasonCode     string     `json:"reason_code,omitempty"`
	Status         string     `json:"status"`
	Replays        int        `json:"replays"`
	TraceID        string     `json:"trace_id,omitempty"`
	FirstAttemptAt *time.Time `json:"first_attempt_at,omitempty"`
	LastAttemptAt  *time.Time `json:"last_attempt_at,omitempty"`
	DeadAt         time.Time  `json:"dead_at"`
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
	es, next, err := a.P.ListDLQ(r.Context(), f)
	switch {
	case errors.Is(err, ErrBadPageToken):
		problem.Error(w, r, http.StatusBadRequest, "page_token is not a token this API issued")
		return
	case err != nil:
		problem.Error(w, r, http.StatusServiceUnavailable, "reading the DLQ index failed: "+err.Error())
		return
	}
	out := make([]dlqListItem, 0, len(es))
	for _, e := range es {
		out = append(out, dlqListItem{DeliveryID: e.DeliveryID, TenantID: e.TenantID, EndpointID: e.EndpointID,
			EventID: e.EventID, EventType: e.EventType, Attempts: e.Attempts, LastStatus: e.LastStatus,
			LastError: e.LastError, Reason: e.Reason, ReasonCode: e.ReasonCode, Status: e.Status, Replays: e.Replays,
			TraceID: e.TraceID, FirstAttemptAt: timePtr(e.FirstAttemptAt), LastAttemptAt: timePtr(e.LastAttemptAt),
			DeadAt: e.DeadAt, Partition: e.Partition, Offset: e.Offset})
	}
	body := map[string]any{"dead_letters": out}
	if next != "" {
		body["next_page_token"] = next
	}
	httpx.WriteJSON(w, http.StatusOK, body)
}

// Replay serves POST /api/v1/dlq/replay.
func (a *API) Replay(w http.ResponseWriter, r *http.Request) {
	f, ok := filterFrom(w, r, false)
	if !ok {
		return
	}
	force := false
	if s := r.URL.Query().Get("force"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			problem.Error(w, r, http.StatusBadRequest, "force must be true or false")
			return
		}
		force = b
	}
	res, err := a.P.Replay(r.Context(), ReplayRequest{Filter: f, Force: force})
	if err != nil {
		problem.Error(w, r, http.StatusServiceUnavailable, "replay failed: "+err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

// Recover serves POST /api/v1/dlq/recover?endpoint=ID&since=T.
func (a *API) Recover(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ep := q.Get("endpoint")
	if ep == "" || q.Get("since") == "" {
		problem.Error(w, r, http.StatusBadRequest, "endpoint and since are required")
		return
	}
	since, err := ParseSince(q.Get("since"), time.Now())
	if err != nil {
		problem.Error(w, r, http.StatusBadRequest, err.Error())
		return
	}
	res, err := a.P.Recover(r.Context(), ep, since)
	switch {
	case errors.Is(err, ErrUnknownEndpoint):
		problem.Error(w, r, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrEndpointState):
		problem.Error(w, r, http.StatusConflict, err.Error())
	case err != nil:
		problem.Error(w, r, http.StatusServiceUnavailable, "recover failed: "+err.Error())
	default:
		httpx.WriteJSON(w, http.StatusOK, res)
	}
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
// event to each enabled endpoint of the calling tenant, once, no retries,
// through each endpoint's lane and the tenant's slots; at most
// test_calls_per_tenant at once per tenant (more answer 429).
func (a *API) Test(w http.ResponseWriter, r *http.Request) {
	t, ok := authctx.TenantFrom(r.Context())
	if !ok {
		problem.Error(w, r, http.StatusForbidden, errNoTenant.Error())
		return
	}
	release, ok := a.P.bulk.tryTest(t.ID, a.P.wh.TestPerTenant)
	if !ok {
		w.Header().Set("Retry-After", "1")
		problem.Error(w, r, http.StatusTooManyRequests, "too many concurrent webhook tests for this tenant; wait for the running ones")
		return
	}
	defer release()
	results := a.P.TestDelivery(r.Context(), t)
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"results": results})
}

// errUnreachable is the one answer the test route gives for every way an
// endpoint cannot be reached (refused, DNS, timeout, TLS, blocked address):
// it must not tell an internal host's open ports from its closed ones.
const errUnreachable = "endpoint unreachable (connection failed, timed out, or the address is not allowed)"

// TestDelivery sends a signed partner.test event to every enabled endpoint
// of t (as the registry has it now) and returns the outcomes. Each goes
// through the endpoint's lane, breaker and the tenant's slots like any
// delivery, so test calls never take more than the tenant's share.
func (p *Processor) TestDelivery(ctx context.Context, t *schemas.Tenant) []TestResult {
	if cur, ok := p.tenants.Get(t.ID); ok {
		t = cur
	}
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
		body, err := render(&ev, ep, p.wh.MaxPayloadBytes)
		if err != nil {
			res.Outcome, res.Error = schemas.OutcomeFailed, err.Error()
			out = append(out, res)
			continue
		}
		task := Task{DeliveryID: id, TenantID: t.ID, EndpointID: ep.ID, EventID: ev.ID, EventType: ev.Type, Body: body}
		a, err := p.testAttempt(ctx, task, ep)
		switch {
		case err != nil:
			res.Outcome, res.Error = schemas.OutcomeFailed, err.Error()
		default:
			res.Outcome, res.StatusCode, res.Error = testOutcome(a), a.StatusCode, a.Err
			res.LatencyMS = float64(a.Latency.Microseconds()) / 1000
			if a.Class == Gone {
				p.cmds.disable(t.ID, ep.ID, "410 Gone from the endpoint (webhook test)")
			}
			if a.Reason.unreachable() {
				res.Outcome, res.Error, res.LatencyMS = schemas.OutcomeFailed, errUnreachable, 0
			}
		}
		out = append(out, res)
	}
	return out
}

func testOutcome(a Attempt) string {
	switch a.Class {
	case Delivered:
		return schemas.OutcomeDelivered
	case Retryable:
		return schemas.OutcomeRetry
	case Gone:
		return schemas.OutcomeDisabled
	}
	return schemas.OutcomeFailed
}

// testAttempt runs one test attempt in the endpoint's lane with the
// tenant's and a global slot; it does not wait for a lane that is
// saturated or an open breaker.
func (p *Processor) testAttempt(ctx context.Context, t Task, ep schemas.Endpoint) (Attempt, error) {
	g := p.gates.get(ep.ID)
	if adm, blocked := g.blocked(time.Now()); blocked {
		return Attempt{}, errors.New("endpoint held: " + adm.reason.describe())
	}
	l := p.bulk.lane(ep.ID)
	if l.saturated(p.wh.PerEndpoint, min(time.Second, p.totalTimeout())) {
		return Attempt{}, errors.New("endpoint busy: its deliveries are not completing")
	}
	type res struct {
		a   Attempt
		err error
	}
	ch := make(chan res, 1)
	l.submit(func() {
		if ctx.Err() != nil {
			ch <- res{err: ctx.Err()}
			return
		}
		release, err := p.bulk.acquire(ctx, t.TenantID)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer release()
		a, _ := p.attempt(ctx, nil, t, ep)
		ch <- res{a: a}
	})
	select {
	case r := <-ch:
		return r.a, r.err
	case <-ctx.Done():
		return Attempt{}, ctx.Err()
	}
}
