package webhooks

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/partners-engine/partners-engine/internal/config"
)

// gate is one endpoint's circuit breaker, Retry-After hold and recovery
// drain rate: it decides whether an attempt may start now and, if not, until
// when the delivery is held (a held delivery consumes no attempt).
//
// Closed: attempts go. After threshold consecutive retryable failures it
// opens for openFor; while open every delivery is held until then. Then
// exactly one delivery goes as the half-open probe: success closes the
// breaker, failure opens it again for twice as long (up to maxOpen). So the
// probe, not a timer, decides when held deliveries resume. Once closed
// after an outage the endpoint is *recovering*: attempts take tokens of a
// bucket (rate, burst) and deliveries without one are held behind a virtual
// queue drained at that rate, so the backlog drains at a bounded rate, and
// the endpoint's new deliveries queue behind it.
//
// Oldest first: held deliveries come back from the retry topics in no
// particular order, so each one waits for its slot in the drain. While the
// breaker is open the gate counts the deliveries it holds for the first
// time (the backlog) and keeps a uniform sample of their age clocks
// (Task.Since); at the close a delivery's slot is its age's rank in the
// sample spread over the drain time at the recovery rate, so the oldest go
// first however the backlog built up. A delivery that comes back after its
// slot without a token is held again for its rank's offset (the older, the
// sooner). The tokens alone bound the rate: a miscounted backlog only
// stretches or squeezes the order's time scale.
//
// A 429's Retry-After holds every delivery of the endpoint until then.
//
// Hand-written rather than sony/gobreaker: gobreaker's half-open state lets
// MaxRequests arbitrary calls through and reports only "open", while the
// scheduler needs to know until when to hold a delivery, to back off the
// open time, and to rate-limit the drain.
type gate struct {
	cfg gateConfig

	mu         sync.Mutex
	url        string
	state      gateState
	failures   int
	openFor    time.Duration
	until      time.Time // open until
	probing    bool
	probeAt    time.Time
	retryAfter time.Time
	recovering bool
	recoverAt  time.Time     // when the breaker closed after an outage
	recoverFor time.Duration // at least this long: held deliveries come back within about the last open time
	tokens     float64
	refilled   time.Time
	queueEnd   time.Time // the recovery queue's virtual end
	lastUsed   time.Time

	// The outage's backlog (see the type's doc): deliveries the open
	// breaker held for the first time, a uniform sample of their age clocks
	// (sorted once recovering), and when the drain at rate is expected to
	// end.
	backlog  int
	ages     []time.Time
	sorted   bool
	drainEnd time.Time
}

// ageSample is the size of a gate's sample of backlog ages: the drain
// order's resolution (1/ageSample of the backlog).
const ageSample = 1024

// drainShare is the share of the recovery rate the backlog's slots use.
const drainShare = 0.8

type gateState int

const (
	closed gateState = iota
	open
	halfOpen
)

func (s gateState) String() string { return [...]string{"closed", "open", "half-open"}[s] }

type gateConfig struct {
	threshold    int
	openFor      time.Duration
	maxOpen      time.Duration
	probeTimeout time.Duration // a probe not reported by then no longer blocks another
	rate         float64
	burst        float64
	onChange     func(endpointID string, from, to gateState)
}

func newGateConfig(w config.Webhooks, onChange func(string, gateState, gateState)) gateConfig {
	openFor, maxOpen := w.Breaker.Open, w.Breaker.MaxOpen
	return gateConfig{threshold: w.Breaker.ConsecutiveFailures, openFor: openFor, maxOpen: max(maxOpen, openFor),
		probeTimeout: w.Timeouts.Total + time.Second,
		rate:         w.Recovery.RatePerSec, burst: float64(w.Recovery.Burst), onChange: onChange}
}

// admission is a gate's answer.
type admission struct {
	ok     bool
	probe  bool
	reason Reason    // held: why
	until  time.Time // held: until when
}

// blocked reports, without changing anything, whether the endpoint holds
// every delivery now (open, a pending probe, a Retry-After): the scheduler
// then holds a delivery without queueing it in the endpoint's lane.
func (g *gate) blocked(now time.Time) (admission, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastUsed = now
	if now.Before(g.retryAfter) {
		return admission{reason: ReasonRetryAfter, until: g.retryAfter}, true
	}
	switch {
	case g.state == open && now.Before(g.until):
		return admission{reason: ReasonBreakerOpen, until: g.until}, true
	case g.state == halfOpen && g.probing && now.Sub(g.probeAt) < g.cfg.probeTimeout:
		return admission{reason: ReasonBreakerOpen, until: g.probeAt.Add(g.cfg.probeTimeout)}, true
	}
	return admission{}, false
}

// held counts a delivery the breaker holds (adm is blocked's or admit's
// answer) into the outage's backlog: since is the delivery's age clock,
// heldBy why it was held before (a delivery the breaker held already is
// counted once).
func (g *gate) held(adm admission, since time.Time, heldBy Reason) {
	if adm.ok || adm.reason != ReasonBreakerOpen {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.note(since, heldBy)
}

// note counts a delivery the open breaker holds into the backlog, its age
// clock into the sample (reservoir sampling: every delivery has the same
// chance to be in it); one it held before (heldBy) is counted already.
func (g *gate) note(since time.Time, heldBy Reason) {
	if heldBy == ReasonBreakerOpen {
		return
	}
	g.backlog++
	if since.IsZero() {
		return
	}
	switch {
	case len(g.ages) < ageSample:
		g.ages = append(g.ages, since)
	default:
		if i := rand.IntN(g.backlog); i < ageSample {
			g.ages[i] = since
		}
	}
	g.sorted = false
}

// resetBacklog forgets the backlog (a new outage, or the drain is over).
func (g *gate) resetBacklog() {
	g.backlog, g.ages, g.sorted = 0, g.ages[:0], false
}

// slot is when a delivery whose age clock started at since is due in the
// drain of the backlog: its age's rank in the sample spread over the drain,
// so the oldest go at once and the others in the order of their age; the
// deliveries younger than the outage go after the backlog.
func (g *gate) slot(since time.Time) time.Time {
	switch {
	case len(g.ages) == 0 || since.IsZero():
		return g.recoverAt
	case !since.Before(g.recoverAt):
		return g.drainEnd
	}
	if !g.sorted {
		slices.SortFunc(g.ages, func(a, b time.Time) int { return a.Compare(b) })
		g.sorted = true
	}
	rank, _ := slices.BinarySearchFunc(g.ages, since, func(a, b time.Time) int { return a.Compare(b) })
	f := float64(rank) / float64(len(g.ages))
	return g.recoverAt.Add(time.Duration(f * float64(g.drainEnd.Sub(g.recoverAt))))
}

// admit decides whether an attempt of endpoint id at url starts now.
// heldBy is why the delivery was held before ("" for a fresh one), since
// its age clock (Task.Since; zero: unknown).
func (g *gate) admit(id, url string, now time.Time, heldBy Reason, since time.Time) admission {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastUsed = now
	if url != g.url {
		// A new URL is a new endpoint as far as health goes.
		g.url, g.state, g.failures, g.probing, g.recovering, g.retryAfter = url, closed, 0, false, false, time.Time{}
	}
	if now.Before(g.retryAfter) {
		return admission{reason: ReasonRetryAfter, until: g.retryAfter}
	}
	switch g.state {
	case open:
		if now.Before(g.until) {
			g.note(since, heldBy)
			return admission{reason: ReasonBreakerOpen, until: g.until}
		}
		g.set(id, halfOpen)
		g.probing = false
		fallthrough
	case halfOpen:
		if g.probing && now.Sub(g.probeAt) < g.cfg.probeTimeout {
			g.note(since, heldBy)
			return admission{reason: ReasonBreakerOpen, until: g.probeAt.Add(g.cfg.probeTimeout)}
		}
		g.probing, g.probeAt = true, now
		return admission{ok: true, probe: true}
	}
	if !g.recovering {
		return admission{ok: true}
	}
	g.refill(now)
	if g.tokens >= g.cfg.burst && !now.Before(g.queueEnd) && !now.Before(g.drainEnd) && now.Sub(g.recoverAt) >= g.recoverFor {
		g.recovering = false // the backlog is gone: no demand beyond the rate
		g.resetBacklog()
		return admission{ok: true}
	}
	// Oldest first: a delivery waits for the slot its age maps to.
	if at := g.slot(since); at.After(now) {
		return admission{reason: ReasonRecovering, until: at}
	}
	// The backlog (held before) goes first; new deliveries queue behind it.
	if g.tokens >= 1 && (heldBy != "" || !now.Before(g.queueEnd)) {
		g.tokens--
		return admission{ok: true}
	}
	step := time.Duration(float64(time.Second) / g.cfg.rate)
	if !since.IsZero() && since.Before(g.recoverAt) {
		// A backlog delivery past its slot without a token (a group held
		// until the same time came back at once): it comes back soon, the
		// older the sooner, and takes the tokens the slots leave free.
		return admission{reason: ReasonRecovering, until: now.Add(max(g.slot(since).Sub(g.recoverAt)/8, step))}
	}
	g.queueEnd = later(g.queueEnd, now).Add(step)
	return admission{reason: ReasonRecovering, until: g.queueEnd}
}

func (g *gate) refill(now time.Time) {
	g.tokens = min(g.cfg.burst, g.tokens+now.Sub(g.refilled).Seconds()*g.cfg.rate)
	g.refilled = now
}

// result is what an attempt says about the endpoint.
type result int

const (
	healthy   result = iota // it answered (2xx, or a 4xx: it is up)
	unhealthy               // a retryable failure: 5xx, 408, 429 without Retry-After, timeout, connection error
	unknown                 // no verdict (the attempt was cancelled)
)

// report records an attempt's result; retryAfter is a 429's Retry-After.
// It returns until when the endpoint is now open, if it is.
func (g *gate) report(id string, now time.Time, probe bool, r result, retryAfter time.Duration) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastUsed = now
	if retryAfter > 0 {
		g.retryAfter = later(g.retryAfter, now.Add(retryAfter))
		r = healthy // rate limited, not down: the endpoint-wide hold is enough
	}
	switch r {
	case unknown:
		if probe {
			g.probing = false
		}
	case healthy:
		g.failures = 0
		if probe && g.state == halfOpen {
			g.set(id, closed)
			g.recovering, g.recoverAt, g.recoverFor = true, now, max(g.openFor, g.cfg.openFor)+time.Second
			g.tokens, g.refilled, g.queueEnd = g.cfg.burst, now, now
			// The backlog beyond the burst drains at rate; its slots use
			// drainShare of the tokens, the rest serve deliveries that come
			// back after their slot.
			g.drainEnd = now.Add(time.Duration(max(float64(g.backlog)-g.cfg.burst, 0) / (drainShare * g.cfg.rate) * float64(time.Second)))
			g.probing, g.openFor = false, 0
		}
	case unhealthy:
		switch {
		case probe && g.state == halfOpen:
			g.openFor = min(max(g.openFor*2, g.cfg.openFor), g.cfg.maxOpen)
			g.until, g.probing = now.Add(g.openFor), false
			g.set(id, open)
		case g.state == closed:
			g.failures++
			if g.failures >= g.cfg.threshold {
				g.openFor, g.until, g.failures = g.cfg.openFor, now.Add(g.cfg.openFor), 0
				if !g.recovering {
					g.resetBacklog() // a new outage
				}
				g.set(id, open)
			}
		}
	}
	if g.state == open {
		return g.until
	}
	return time.Time{}
}

func (g *gate) set(id string, to gateState) {
	if g.state == to {
		return
	}
	from := g.state
	g.state = to
	if g.cfg.onChange != nil {
		g.cfg.onChange(id, from, to)
	}
}

// idle reports whether the gate holds no state worth keeping at now: closed,
// no failures counted, not recovering, no Retry-After, unused for idleFor.
func (g *gate) idle(now time.Time, idleFor time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state == closed && g.failures == 0 && !g.recovering && !now.Before(g.retryAfter) &&
		now.Sub(g.lastUsed) >= idleFor
}

func (g *gate) stateAt() gateState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// gates holds the gates of the endpoints seen recently.
type gates struct {
	cfg gateConfig
	mu  sync.Mutex
	m   map[string]*gate
}

func newGates(cfg gateConfig) *gates { return &gates{cfg: cfg, m: map[string]*gate{}} }

func (gs *gates) get(endpointID string) *gate {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g, ok := gs.m[endpointID]
	if !ok {
		g = &gate{cfg: gs.cfg, lastUsed: time.Now()}
		gs.m[endpointID] = g
	}
	return g
}

// sweep drops the gates of endpoints that no longer exist and of idle ones:
// the map follows the endpoints that have traffic, not every endpoint ever
// seen.
func (gs *gates) sweep(now time.Time, exists func(endpointID string) bool, idleFor time.Duration) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	for id, g := range gs.m {
		if !exists(id) || g.idle(now, idleFor) {
			delete(gs.m, id)
		}
	}
}

func (gs *gates) len() int {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return len(gs.m)
}

// BreakerStates returns the breaker state (closed, open, half-open) of
// every endpoint the processor tracks now (those with recent traffic), for
// the operator console's health page. Untracked endpoints are closed.
func (p *Processor) BreakerStates() map[string]string {
	p.gates.mu.Lock()
	gs := make(map[string]*gate, len(p.gates.m))
	for id, g := range p.gates.m {
		gs[id] = g
	}
	p.gates.mu.Unlock()
	out := make(map[string]string, len(gs))
	for id, g := range gs {
		out[id] = g.stateAt().String()
	}
	return out
}
