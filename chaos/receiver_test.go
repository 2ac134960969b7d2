package chaos

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/partners-engine/partners-engine/internal/testenv"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Receiver modes: how a partner's endpoint answers.
const (
	healthy = "healthy" // 204 to everything
	flaky   = "flaky"   // 500 to the first attempt of every third event, then 204
	down    = "down"    // 204, except while down: nothing listens (connection refused)
	strict  = "strict"  // 422 to every fifth event, always (a permanent failure: the DLQ), else 204
)

// receiver is one partner's webhook endpoint. It verifies every request
// with the official Standard Webhooks library and keeps, per webhook-id,
// what it received and answered.
type receiver struct {
	mode string
	port int

	mu         sync.Mutex
	secrets    []string // every secret the tenant was given (rotation)
	hooks      map[string]*hook
	badSigs    int
	badSample  []string // what the first bad signatures were (diagnosis)
	incomplete int      // requests whose body did not arrive whole (the sender gave up mid-request)
	requests   int
	srv        *http.Server
	isDown     bool
}

// hook is what one webhook-id got.
type hook struct {
	eventID  string
	seq      int
	body     [32]byte
	bodies   int       // distinct bodies seen under this id (must stay 1)
	attempts int       // requests
	okAt     time.Time // first 2xx answer
	afterOK  int       // requests after the first 2xx answer: repeats after success
	log      []string  // "<unix ms>:<status>" of every request (diagnosis of repeats)
}

// newReceiver listens on a loopback port of receiverPorts, which the
// deployment's allow-list of webhook targets names (PARTNERS_WEBHOOK_ALLOW).
// The range is the suite's own, apart from the shipped 9900-9999 that
// `partners demo` binds: go test runs the demo's packages beside this one,
// and a demo receiver on a port a "down" receiver had closed got this
// suite's deliveries, or a chaos receiver the demo's (signed with another
// tenant's secret: a bad signature here, CI saw one). A port is never used
// twice in one run, so no later scenario inherits an earlier one's
// deliveries either.
const (
	receiverPortLo = 19000
	receiverPortN  = 1000
)

// receiverAllow is the allow-list entry that lets the processes under test
// deliver to the receivers.
var receiverAllow = fmt.Sprintf("127.0.0.1:%d-%d", receiverPortLo, receiverPortLo+receiverPortN-1)

func newReceiver(mode string) (*receiver, error) {
	l, port, err := testenv.ListenIn(receiverPortLo, receiverPortN)
	if err != nil {
		return nil, fmt.Errorf("receiver %s (allow-list %s): %w", mode, receiverAllow, err)
	}
	r := &receiver{mode: mode, port: port, hooks: map[string]*hook{}}
	r.serve(l)
	return r, nil
}

func (r *receiver) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/hook", r.port) }

func (r *receiver) serve(l net.Listener) {
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// addSecret adds a secret the tenant's webhooks may be signed with.
func (r *receiver) addSecret(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secrets = append(r.secrets, s)
}

// GoDown closes the listener and every open connection: the partner is
// unreachable (connection refused) until GoUp.
func (r *receiver) GoDown() {
	r.mu.Lock()
	srv := r.srv
	r.isDown = true
	r.mu.Unlock()
	_ = srv.Close()
}

// GoUp listens on the same port again.
func (r *receiver) GoUp() error {
	var err error
	for i := 0; i < 100; i++ {
		var l net.Listener
		if l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.port)); err == nil {
			r.mu.Lock()
			r.isDown = false
			r.mu.Unlock()
			r.serve(l)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("receiver %s: port %d: %w", r.mode, r.port, err)
}

func (r *receiver) Close() {
	r.mu.Lock()
	srv := r.srv
	r.mu.Unlock()
	_ = srv.Close()
}

func (r *receiver) verify(body []byte, h http.Header) error {
	for _, s := range r.secrets {
		wh, err := standardwebhooks.NewWebhook(s)
		if err == nil && wh.Verify(body, h) == nil {
			return nil
		}
	}
	return errors.New("no secret verifies the signature")
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, readErr := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	var payload struct {
		ID   string `json:"id"`
		Data struct {
			Seq int `json:"seq"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &payload)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if readErr != nil || (req.ContentLength >= 0 && int64(len(body)) != req.ContentLength) {
		// The sender cancelled the request (its attempt timeout) before the
		// body was sent: no answer reaches it, nothing to verify.
		r.incomplete++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := r.verify(body, req.Header); err != nil {
		r.badSigs++
		if len(r.badSample) < 3 {
			r.badSample = append(r.badSample, fmt.Sprintf("%s webhook-id %s timestamp %s (now %d) signature %q, %d bytes: %v",
				r.mode, req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), time.Now().Unix(), clip(req.Header.Get("webhook-signature"), 40), len(body), err))
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id := req.Header.Get("webhook-id")
	h := r.hooks[id]
	sum := sha256.Sum256(body)
	if h == nil {
		h = &hook{eventID: payload.ID, seq: payload.Data.Seq, body: sum, bodies: 1}
		r.hooks[id] = h
	} else if h.body != sum {
		h.bodies++
		h.body = sum
	}
	h.attempts++
	status := http.StatusNoContent
	switch {
	case r.mode == flaky && h.seq%3 == 0 && h.attempts == 1:
		status = http.StatusInternalServerError
	case r.mode == strict && h.seq%5 == 0:
		status = http.StatusUnprocessableEntity
	}
	if status < 300 {
		if h.okAt.IsZero() {
			h.okAt = time.Now()
		} else {
			h.afterOK++
		}
	}
	h.log = append(h.log, fmt.Sprintf("%d:%d", time.Now().UnixMilli(), status))
	w.WriteHeader(status)
}

// repeatSample describes up to n deliveries repeated after success.
func (r *receiver) repeatSample(n int, since time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, h := range r.hooks {
		if h.afterOK == 0 || len(out) >= n {
			continue
		}
		out = append(out, r.timeline(id, h, since))
	}
	return out
}

// delivery is what a receiver knows of one event.
type delivery struct {
	ids      int       // distinct webhook-ids that carried the event
	ok       bool      // answered 2xx at least once
	okAt     time.Time // first 2xx
	repeats  int       // requests after the first 2xx (all ids), plus the 2xx of any extra id
	attempts int
	bodies   int // most distinct bodies under one id
}

// deliveries returns per event id what the receiver got.
func (r *receiver) deliveries() map[string]*delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*delivery{}
	for _, h := range r.hooks {
		d := out[h.eventID]
		if d == nil {
			d = &delivery{}
			out[h.eventID] = d
		}
		d.ids++
		d.attempts += h.attempts
		d.repeats += h.afterOK
		d.bodies = max(d.bodies, h.bodies)
		if !h.okAt.IsZero() {
			if d.ok { // a second webhook-id delivered the same event: the partner cannot de-duplicate it
				d.repeats++
			}
			if !d.ok || h.okAt.Before(d.okAt) {
				d.okAt = h.okAt
			}
			d.ok = true
		}
	}
	return out
}

// window is a span of time.
type window struct{ from, to time.Time }

// inAny reports whether t falls in one of the windows (ends included).
func inAny(ws []window, t time.Time) bool {
	for _, w := range ws {
		if !t.Before(w.from) && !t.After(w.to) {
			return true
		}
	}
	return false
}

// succeededIn counts the webhook-ids whose first 2xx answer fell in one of
// the windows: the deliveries the processor may make again after a redo.
func (r *receiver) succeededIn(ws []window) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, h := range r.hooks {
		if h.okAt.IsZero() {
			continue
		}
		if inAny(ws, h.okAt) {
			n++
		}
	}
	return n
}

// timeline describes what webhook-id id got: each request's answer, at
// seconds since since.
func (r *receiver) timeline(id string, h *hook, since time.Time) string {
	var steps []string
	for _, l := range h.log {
		ms, st, _ := strings.Cut(l, ":")
		v, _ := strconv.ParseInt(ms, 10, 64)
		steps = append(steps, fmt.Sprintf("%.2fs→%s", time.UnixMilli(v).Sub(since).Seconds(), st))
	}
	return fmt.Sprintf("%s %s seq %d: %s", r.mode, id, h.seq, strings.Join(steps, " "))
}

// repeatedOutside counts the webhook-ids repeated after a 2xx whose first
// 2xx fell in none of the windows, and describes up to n of them (seconds
// since since → status): what the repeat bound does not explain.
func (r *receiver) repeatedOutside(ws []window, since time.Time, n int) (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	count := 0
	var out []string
	for id, h := range r.hooks {
		if h.afterOK == 0 {
			continue
		}
		if inAny(ws, h.okAt) {
			continue
		}
		count++
		if len(out) < n {
			out = append(out, r.timeline(id, h, since))
		}
	}
	return count, out
}

func (r *receiver) badSignatures() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.badSigs, append([]string(nil), r.badSample...)
}
