package webhooks

import (
	"fmt"
	"time"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

// outcome is what became of one try at a delivery: an HTTP attempt, a hold
// (no attempt made: breaker open, Retry-After, saturation, recovery rate),
// or a rejection before any attempt (tenant suspended, endpoint disabled,
// filter or render failure).
type outcome struct {
	kind   outcomeKind
	att    Attempt // attempted
	probe  bool    // attempted as the breaker's half-open probe
	reason Reason  // held or rejected: why
	detail string  // rejected: the words
	until  time.Time
}

type outcomeKind int

const (
	attempted outcomeKind = iota
	held
	rejected
	filtered // a replayed delivery the endpoint's current filter no longer selects
)

// action is where a delivery goes next.
type action int

const (
	actDone       action = iota // delivered (or filtered out): nothing more to do
	actRetry                    // a retry topic, after a charged attempt
	actHold                     // a retry topic, no attempt consumed
	actDeadLetter               // the DLQ
)

func (a action) String() string {
	return [...]string{"done", "retry", "hold", "dead-letter"}[a]
}

// decision is the pure routing of an outcome.
type decision struct {
	action    action
	level     int           // retry topic of actRetry and actHold
	wait      time.Duration // until the next try
	charge    bool          // the attempt counts against max_attempts
	reason    Reason        // of a dead letter
	text      string        // of a dead letter, in words
	disable   bool          // command: disable the endpoint (410 Gone)
	logResult string        // delivery-log outcome of the attempt, "" when none was made
}

// policy routes outcomes. It is pure: the same task, outcome and time give
// the same decision.
type policy struct {
	maxAttempts   int
	maxAge        time.Duration // 0: none
	levels        int           // retry topics
	delay         func(level int) time.Duration
	maxRetryAfter time.Duration
}

func newPolicy(w config.Webhooks) policy {
	return policy{maxAttempts: w.Retry.MaxAttempts, maxAge: w.Retry.MaxAge, levels: retryLevels(w),
		delay: w.Retry.Delay, maxRetryAfter: w.MaxRetryAfter}
}

// retryLevels is the number of retry topics: max_attempts-1, and at least
// one, where held deliveries wait.
func retryLevels(w config.Webhooks) int { return max(w.Retry.MaxAttempts-1, 1) }

// levelFor is the retry topic whose fixed delay is the longest that does not
// exceed wait (the first when none does): a delivery waits there and, if it
// is still not due, moves on to the level that fits what remains.
func (p policy) levelFor(wait time.Duration) int {
	best := 1
	for n := 1; n <= p.levels; n++ {
		if p.delay(n) <= wait {
			best = n
		}
	}
	return best
}

func (p policy) expired(t Task, now time.Time) bool {
	return p.maxAge > 0 && !t.Since.IsZero() && now.Sub(t.Since) >= p.maxAge
}

// decide routes the outcome o of task t at now.
func (p policy) decide(t Task, o outcome, now time.Time) decision {
	switch o.kind {
	case filtered:
		return decision{action: actDone}
	case rejected:
		return decision{action: actDeadLetter, reason: o.reason, text: o.detail}
	case held:
		if p.expired(t, now) {
			return decision{action: actDeadLetter, reason: o.reason,
				text: fmt.Sprintf("max age exceeded (%v) while held: %s%s", p.maxAge, o.reason.describe(), lastError(t))}
		}
		wait := max(o.until.Sub(now), 0)
		return decision{action: actHold, level: p.levelFor(wait), wait: wait}
	}
	a := o.att
	switch a.Class {
	case Delivered:
		return decision{action: actDone, logResult: schemas.OutcomeDelivered}
	case Gone:
		return decision{action: actDeadLetter, reason: ReasonGone, text: "endpoint gone (410): endpoint disabled",
			disable: true, charge: true, logResult: schemas.OutcomeDisabled}
	case Permanent:
		return decision{action: actDeadLetter, reason: a.Reason, text: "permanent failure: " + a.Err,
			charge: true, logResult: schemas.OutcomeFailed}
	}
	// Retryable. A failed probe tells about the endpoint, not the delivery:
	// it is held again with its budget intact.
	charged := t.Charged
	if !o.probe {
		charged++
	}
	switch {
	case charged >= p.maxAttempts:
		return decision{action: actDeadLetter, reason: a.Reason, charge: !o.probe, logResult: schemas.OutcomeFailed,
			text: fmt.Sprintf("attempts exhausted (%d of %d): %s", charged, p.maxAttempts, a.Err)}
	case p.expired(t, now):
		return decision{action: actDeadLetter, reason: a.Reason, charge: !o.probe, logResult: schemas.OutcomeFailed,
			text: fmt.Sprintf("max age exceeded (%v) after %d attempts: %s", p.maxAge, t.Attempts+1, a.Err)}
	}
	wait := p.delay(max(charged, 1))
	if ra := min(a.RetryAfter, p.maxRetryAfter); ra > wait {
		wait = ra
	}
	if o.probe {
		wait = max(o.until.Sub(now), 0)
	}
	return decision{action: actRetry, level: p.levelFor(wait), wait: wait, charge: !o.probe, logResult: schemas.OutcomeRetry}
}

func lastError(t Task) string {
	if t.LastError == "" {
		return ""
	}
	return "; last error: " + t.LastError
}
