package webhooks

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/schemas"
)

// Dead-letter states in the index.
const (
	statusDead      = "dead"      // waiting for an operator
	statusReplayed  = "replayed"  // put back by a replay or a recovery; its outcome follows
	statusDelivered = "delivered" // delivered after a replay
	statusDropped   = "dropped"   // after a replay, the endpoint's filter no longer selects it
)

// statuses are the states a listing may ask for.
var statuses = []string{statusDead, statusReplayed, statusDelivered, statusDropped}

// indexRecord is a record of partners.webhooks.dlq.index (compacted, keyed
// by Key: the delivery id, or input/<topic>/<partition>/<offset> for input
// that is no delivery): the latest state of one dead letter, self-contained
// (payload included) so compaction never loses what a replay needs.
type indexRecord struct {
	schemas.DeadLetter
	Key       string    `json:"key"`
	Status    string    `json:"status"`
	DeadAt    time.Time `json:"dead_at"`
	UpdatedAt time.Time `json:"updated_at"`
	ReplayID  string    `json:"replay_id,omitempty"`
}

// decodeIndexRecord decodes an index record; it never panics.
func decodeIndexRecord(b []byte) (indexRecord, error) {
	var r indexRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return r, err
	}
	if r.Key == "" || !validStatus(r.Status) {
		return r, errors.New("index record without key or with an unknown status")
	}
	return r, nil
}

func validStatus(s string) bool {
	for _, x := range statuses {
		if s == x {
			return true
		}
	}
	return false
}

// DLQEntry is a dead letter as the index holds it: everything but the
// payload, and where its index record is (to fetch the payload on replay).
type DLQEntry struct {
	Key            string    `json:"key"`
	DeliveryID     string    `json:"delivery_id,omitempty"`
	TenantID       string    `json:"tenant_id,omitempty"`
	EndpointID     string    `json:"endpoint_id,omitempty"`
	EventID        string    `json:"event_id,omitempty"`
	EventType      string    `json:"event_type,omitempty"`
	Attempts       int       `json:"attempts"`
	LastStatus     int       `json:"last_status,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	Reason         string    `json:"reason"`
	ReasonCode     string    `json:"reason_code,omitempty"`
	SourceTopic    string    `json:"source_topic,omitempty"`
	TraceID        string    `json:"trace_id,omitempty"`
	PayloadKind    string    `json:"payload_kind,omitempty"`
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	DeadAt         time.Time `json:"dead_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	Status         string    `json:"status"`
	Replays        int       `json:"replays"`
	ReplayID       string    `json:"replay_id,omitempty"`
	Partition      int32     `json:"partition"`
	Offset         int64     `json:"offset"`
	replayable     bool
}

// Replayable reports whether the entry is a delivery a replay can send.
func (e *DLQEntry) Replayable() bool { return e.replayable }

func entryOf(r indexRecord, part int32, off int64) *DLQEntry {
	d := r.DeadLetter
	return &DLQEntry{Key: r.Key, DeliveryID: d.DeliveryID, TenantID: d.TenantID, EndpointID: d.EndpointID,
		EventID: d.EventID, EventType: d.EventType, Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: d.LastError,
		Reason: d.Reason, ReasonCode: d.ReasonCode, SourceTopic: d.SourceTopic, TraceID: d.TraceID, PayloadKind: d.PayloadKind,
		FirstAttemptAt: d.FirstAttemptAt, LastAttemptAt: d.LastAttemptAt, DeadAt: r.DeadAt, UpdatedAt: r.UpdatedAt,
		Status: r.Status, Replays: d.Replays, ReplayID: r.ReplayID, Partition: part, Offset: off,
		replayable: d.DeliveryID != "" && d.EndpointID != "" && d.TenantID != "" && len(d.Payload) > 0}
}

// newer orders entries newest first, then by key: the listing order.
func newer(a, b *DLQEntry) bool {
	if !a.DeadAt.Equal(b.DeadAt) {
		return a.DeadAt.After(b.DeadAt)
	}
	return a.Key < b.Key
}

// DLQFilter selects dead letters. Empty fields match everything.
type DLQFilter struct {
	Tenant      string
	Endpoint    string
	EventType   string
	Reason      string    // reason code
	Status      string    // "" or "dead": waiting ones; "all": any; or one of replayed, delivered, dropped
	Since       time.Time // dead at or after
	Until       time.Time // dead before
	DeliveryIDs []string  // only these deliveries
	Limit       int       // List: at most this many (0: 100)
	PageToken   string    // List: from the page after this token
}

// unfiltered reports whether f selects by nothing but status and paging:
// the selection of an unfiltered replay.
func (f DLQFilter) unfiltered() bool {
	return f.Tenant == "" && f.Endpoint == "" && f.EventType == "" && f.Reason == "" && f.Since.IsZero() &&
		f.Until.IsZero() && len(f.DeliveryIDs) == 0
}

func (f DLQFilter) match(e *DLQEntry) bool {
	switch {
	case f.Tenant != "" && e.TenantID != f.Tenant,
		f.Endpoint != "" && e.EndpointID != f.Endpoint,
		f.EventType != "" && e.EventType != f.EventType,
		f.Reason != "" && e.ReasonCode != f.Reason,
		!f.Since.IsZero() && e.DeadAt.Before(f.Since),
		!f.Until.IsZero() && !e.DeadAt.Before(f.Until):
		return false
	}
	switch f.Status {
	case "", statusDead:
		if e.Status != statusDead {
			return false
		}
	case "all":
	default:
		if e.Status != f.Status {
			return false
		}
	}
	if len(f.DeliveryIDs) > 0 {
		for _, id := range f.DeliveryIDs {
			if id == e.DeliveryID {
				return true
			}
		}
		return false
	}
	return true
}

// ErrBadPageToken is returned for a page token this index did not issue.
var ErrBadPageToken = errors.New("invalid page_token")

func pageToken(e *DLQEntry) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(e.DeadAt.UnixNano(), 10) + "|" + e.Key))
}

func parsePageToken(s string) (*DLQEntry, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadPageToken
	}
	ns, key, ok := strings.Cut(string(b), "|")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return nil, ErrBadPageToken
	}
	return &DLQEntry{DeadAt: time.Unix(0, n).UTC(), Key: key}, nil
}

// dlqIndex is the DLQ index in memory: it follows the compacted index topic
// from its start (every processor instance holds the same index) and keeps
// the entries ordered newest first, overall, per tenant and per endpoint,
// so a filtered, paginated listing costs the page, not a scan of the DLQ.
type dlqIndex struct {
	p     *Processor
	topic string
	ready chan struct{}

	mu         sync.RWMutex
	byKey      map[string]*DLQEntry
	all        *btree.BTreeG[*DLQEntry]
	byTenant   map[string]*btree.BTreeG[*DLQEntry]
	byEndpoint map[string]*btree.BTreeG[*DLQEntry]
	dead       int
	applied    map[int32]int64 // next offset per partition
	moved      chan struct{}   // closed and replaced whenever applied moves
}

func newDLQIndex(p *Processor) *dlqIndex {
	return &dlqIndex{p: p, topic: p.names.Topic(schemas.TopicDLQIndex), ready: make(chan struct{}),
		byKey: map[string]*DLQEntry{}, all: btree.NewG(16, newer), byTenant: map[string]*btree.BTreeG[*DLQEntry]{},
		byEndpoint: map[string]*btree.BTreeG[*DLQEntry]{}, applied: map[int32]int64{}, moved: make(chan struct{})}
}

// Run follows the index topic until ctx ends.
func (x *dlqIndex) Run(ctx context.Context) error {
	cl, err := x.p.kafka.NewClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(x.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	go x.markReady(ctx, cl)
	expire := time.NewTicker(time.Minute)
	defer expire.Stop()
	for {
		// Bounded polls: an idle topic must not keep expiry from running.
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				x.p.log.Warn("DLQ index fetch error", "partition", p, "err", err)
			}
		})
		x.mu.Lock()
		fs.EachRecord(x.apply)
		x.mu.Unlock()
		x.signal()
		select {
		case <-expire.C:
			x.expire(time.Now())
		default:
		}
	}
}

// markReady closes ready once the index caught up with the topic as it was
// at start.
func (x *dlqIndex) markReady(ctx context.Context, cl *kgo.Client) {
	for ctx.Err() == nil {
		if err := x.waitFor(ctx, kadm.NewClient(cl)); err == nil {
			close(x.ready)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// apply takes one index record. Called with mu held, in offset order.
func (x *dlqIndex) apply(r *kgo.Record) {
	x.applied[r.Partition] = r.Offset + 1
	if r.Attrs.IsControl() {
		return
	}
	key := string(r.Key)
	if old, ok := x.byKey[key]; ok {
		x.remove(old)
	}
	if r.Value == nil {
		return // tombstone
	}
	rec, err := decodeIndexRecord(r.Value)
	if err != nil || rec.Key != key {
		x.p.log.Warn("undecodable DLQ index record skipped", "partition", r.Partition, "offset", r.Offset)
		return
	}
	if x.expired(rec.DeadAt, time.Now()) {
		return
	}
	x.insert(entryOf(rec, r.Partition, r.Offset))
}

func (x *dlqIndex) insert(e *DLQEntry) {
	x.byKey[e.Key] = e
	x.all.ReplaceOrInsert(e)
	tree := func(m map[string]*btree.BTreeG[*DLQEntry], k string) *btree.BTreeG[*DLQEntry] {
		t := m[k]
		if t == nil {
			t = btree.NewG(16, newer)
			m[k] = t
		}
		return t
	}
	if e.TenantID != "" {
		tree(x.byTenant, e.TenantID).ReplaceOrInsert(e)
	}
	if e.EndpointID != "" {
		tree(x.byEndpoint, e.EndpointID).ReplaceOrInsert(e)
	}
	if e.Status == statusDead {
		x.dead++
	}
	x.p.m.dlqDepth.Set(float64(x.dead))
}

func (x *dlqIndex) remove(e *DLQEntry) {
	delete(x.byKey, e.Key)
	x.all.Delete(e)
	for _, m := range []struct {
		m map[string]*btree.BTreeG[*DLQEntry]
		k string
	}{{x.byTenant, e.TenantID}, {x.byEndpoint, e.EndpointID}} {
		if t := m.m[m.k]; t != nil {
			t.Delete(e)
			if t.Len() == 0 {
				delete(m.m, m.k)
			}
		}
	}
	if e.Status == statusDead {
		x.dead--
	}
	x.p.m.dlqDepth.Set(float64(x.dead))
}

func (x *dlqIndex) expired(deadAt, now time.Time) bool {
	return now.Sub(deadAt) > x.p.wh.DLQ.Retention
}

// expire drops the entries past the DLQ's retention (their payloads are
// gone from the topics too): the depth gauge goes down with them.
func (x *dlqIndex) expire(now time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var old []*DLQEntry
	x.all.Descend(func(e *DLQEntry) bool { // oldest first
		if !x.expired(e.DeadAt, now) {
			return false
		}
		old = append(old, e)
		return true
	})
	for _, e := range old {
		x.remove(e)
	}
}

func (x *dlqIndex) signal() {
	x.mu.Lock()
	close(x.moved)
	x.moved = make(chan struct{})
	x.mu.Unlock()
}

// waitFor blocks until the index applied the index topic up to its current
// committed end: what any transaction committed before the call is then in
// the index (read-your-writes for replays and listings).
func (x *dlqIndex) waitFor(ctx context.Context, adm *kadm.Client) error {
	ends, err := adm.ListCommittedOffsets(ctx, x.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("DLQ index end offsets: %w", err)
	}
	for {
		x.mu.RLock()
		behind := false
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset > 0 && x.applied[o.Partition] < o.Offset {
				behind = true
			}
		})
		moved := x.moved
		x.mu.RUnlock()
		if !behind {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-moved:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Ready is closed once the index has loaded the topic.
func (x *dlqIndex) Ready() <-chan struct{} { return x.ready }

func (x *dlqIndex) waitReady(ctx context.Context) error {
	select {
	case <-x.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("DLQ index still loading: %w", ctx.Err())
	}
}

// each calls fn for the entries matching f, newest first, starting after
// the page token, until fn returns false. It walks the narrowest tree the
// filter allows.
func (x *dlqIndex) each(f DLQFilter, fn func(*DLQEntry) bool) error {
	var from *DLQEntry
	if f.PageToken != "" {
		t, err := parsePageToken(f.PageToken)
		if err != nil {
			return err
		}
		from = t
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	tree := x.all
	switch {
	case f.Endpoint != "":
		tree = x.byEndpoint[f.Endpoint]
	case f.Tenant != "":
		tree = x.byTenant[f.Tenant]
	}
	if tree == nil {
		return nil
	}
	visit := func(e *DLQEntry) bool {
		if !f.Since.IsZero() && e.DeadAt.Before(f.Since) {
			return false // newest first: everything after is older still
		}
		if from != nil && !newer(from, e) {
			return true
		}
		if !f.match(e) {
			return true
		}
		c := *e
		return fn(&c)
	}
	if from != nil {
		tree.AscendGreaterOrEqual(from, visit)
	} else if !f.Until.IsZero() {
		tree.AscendGreaterOrEqual(&DLQEntry{DeadAt: f.Until.Add(-time.Nanosecond)}, visit)
	} else {
		tree.Ascend(visit)
	}
	return nil
}

// List returns a page of the entries matching f, newest first, and the
// token of the next page ("" when this is the last).
func (x *dlqIndex) List(f DLQFilter) ([]DLQEntry, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	out := make([]DLQEntry, 0, min(limit, 1024))
	next := ""
	err := x.each(f, func(e *DLQEntry) bool {
		if len(out) == limit {
			next = pageToken(&out[len(out)-1])
			return false
		}
		out = append(out, *e)
		return true
	})
	return out, next, err
}

// Depth is the number of dead letters waiting (status dead).
func (x *dlqIndex) Depth() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.dead
}
