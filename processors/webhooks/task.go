package webhooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Task is a record of a retry topic or of the FIFO topic: one pending
// delivery. Body holds the exact bytes of the first attempt so every retry
// and replay sends the same content under the same webhook-id.
type Task struct {
	SchemaVersion string `json:"schema_version"`
	DeliveryID    string `json:"delivery_id"`
	TenantID      string `json:"tenant_id"`
	EndpointID    string `json:"endpoint_id"`
	EventID       string `json:"event_id"`
	EventType     string `json:"event_type"`
	Stage         int    `json:"stage"` // retry topic this record is in (1-based); 0: first attempt or FIFO
	// Attempts counts every HTTP attempt made (it numbers the delivery log);
	// Charged those counted against max_attempts: a failed half-open probe
	// is the endpoint's failure, not the delivery's, and is not charged.
	Attempts  int       `json:"attempts"`
	Charged   int       `json:"charged"`
	NotBefore time.Time `json:"not_before"`
	// Since starts the max-age clock: the fan-out, or the replay.
	Since          time.Time `json:"since,omitzero"`
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	LastStatus     int       `json:"last_status,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	LastReason     Reason    `json:"last_reason,omitempty"`
	// HeldBy is why the delivery waits now (breaker_open, retry_after, …);
	// Holds counts the times it was held.
	HeldBy  Reason `json:"held_by,omitempty"`
	Holds   int    `json:"holds,omitempty"`
	TraceID string `json:"trace_id,omitempty"`
	SpanID  string `json:"span_id,omitempty"` // last attempt's span, linked by the next
	FIFO    bool   `json:"fifo,omitempty"`
	// Replayed marks a delivery put back from the DLQ; Replays counts them.
	Replayed bool      `json:"replayed,omitempty"`
	Replays  int       `json:"replays,omitempty"`
	ReplayID string    `json:"replay_id,omitempty"`
	DeadAt   time.Time `json:"dead_at,omitzero"` // of the dead letter it was replayed from
	// Render: Body is the event, to be filtered and rendered with the
	// endpoint's current settings before the attempt (a replayed filter or
	// render failure).
	Render bool   `json:"render,omitempty"`
	Body   []byte `json:"body"`
}

// errMalformedTask is why a retry or FIFO record is not a task.
var errMalformedTask = errors.New("malformed retry record")

// decodeTask decodes a retry or FIFO topic record. It never panics and
// rejects what a delivery cannot be made of: no ids, no body, negative
// counts.
func decodeTask(b []byte) (Task, error) {
	var t Task
	if err := json.Unmarshal(b, &t); err != nil {
		return Task{}, fmt.Errorf("%w: %v", errMalformedTask, err)
	}
	switch {
	case t.DeliveryID == "" || t.TenantID == "" || t.EndpointID == "":
		return Task{}, fmt.Errorf("%w: delivery_id, tenant_id and endpoint_id are required", errMalformedTask)
	case len(t.Body) == 0:
		return Task{}, fmt.Errorf("%w: empty body", errMalformedTask)
	case t.Attempts < 0 || t.Charged < 0 || t.Charged > t.Attempts || t.Stage < 0 || t.Holds < 0 || t.Replays < 0:
		return Task{}, fmt.Errorf("%w: negative or inconsistent counts", errMalformedTask)
	}
	if t.Since.IsZero() {
		t.Since = t.FirstAttemptAt
	}
	return t, nil
}
