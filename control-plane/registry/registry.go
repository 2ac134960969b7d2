// Package registry owns the tenants: the in-memory view of the compacted
// partners.tenants.v1 topic (the source of truth) with a key-hash index, the
// change notifications the control plane, edge and processors follow
// (OnChange, with a cancel), and the Writer that the admin API uses to change
// tenants. New builds; Run follows the topic until its context ends.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/schemas"
)

// ChangeFunc is called, in topic order, for every applied change. old is nil
// for a new tenant, new is nil for a deleted one. It must not block for long.
// It is an alias, so consumers declare OnChange(func(old, new
// *schemas.Tenant)) (cancel func()) in their own interfaces without
// importing this package.
type ChangeFunc = func(old, new *schemas.Tenant)

// Registry is the in-memory tenant view. Tenants returned by its methods are
// shared and must be treated as read-only.
type Registry struct {
	log   *slog.Logger
	topic string

	mu        sync.RWMutex
	tenants   map[string]*schemas.Tenant
	byKeyHash map[string]string // key hash -> tenant id
	byName    map[string]string // lower-case name -> tenant id
	list      []*schemas.Tenant // sorted snapshot for List; nil after a change
	watchers  []*watcher        // replaced, never modified in place: apply iterates a copy
	applied   map[string]int64  // tenant id -> version, for read-your-writes
	cond      *sync.Cond
	ready     chan struct{}

	skipped prometheus.Counter
	applies prometheus.Counter
	lastLag prometheus.Gauge
}

// New returns an empty registry reading topic, its metrics registered with
// reg (nil: not registered). It starts nothing: Run reads the topic.
func New(topic string, log *slog.Logger, reg prometheus.Registerer) (*Registry, error) {
	r := &Registry{
		log:       log.With("component", "registry"),
		topic:     topic,
		tenants:   map[string]*schemas.Tenant{},
		byKeyHash: map[string]string{},
		byName:    map[string]string{},
		applied:   map[string]int64{},
		ready:     make(chan struct{}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_registry_records_skipped_total", Help: "Tenant records that could not be decoded and were skipped."}),
		applies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_registry_changes_applied_total", Help: "Tenant changes applied from the tenants topic."}),
		lastLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "partners_registry_apply_delay_seconds", Help: "Delay between a tenant record's timestamp and its application, last record."}),
	}
	r.cond = sync.NewCond(&r.mu)
	if reg != nil {
		for _, c := range []prometheus.Collector{r.skipped, r.applies, r.lastLag} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registry metrics: %w", err)
			}
		}
	}
	return r, nil
}

type watcher struct {
	fn        ChangeFunc
	cancelled atomic.Bool
}

// OnChange registers fn for every change applied from now on and returns the
// function that unregisters it: once cancel returns, fn is not called for
// any change applied later (a call already under way may finish). cancel
// may be called more than once.
func (r *Registry) OnChange(fn ChangeFunc) (cancel func()) {
	w := &watcher{fn: fn}
	r.mu.Lock()
	r.watchers = append(slices.Clone(r.watchers), w)
	r.mu.Unlock()
	return func() {
		w.cancelled.Store(true)
		r.mu.Lock()
		r.watchers = slices.DeleteFunc(slices.Clone(r.watchers), func(x *watcher) bool { return x == w })
		r.mu.Unlock()
	}
}

// Watchers is the number of registered change functions.
func (r *Registry) Watchers() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.watchers)
}

// Ready is closed once the topic has been read to its end at start.
func (r *Registry) Ready() <-chan struct{} { return r.ready }

// Get returns a tenant by id.
func (r *Registry) Get(id string) (*schemas.Tenant, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.tenants[id]
	return t, ok
}

// ByName returns a tenant by name, case-insensitively.
func (r *Registry) ByName(name string) (*schemas.Tenant, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byName[strings.ToLower(name)]
	if !ok {
		return nil, false
	}
	return r.tenants[id], true
}

// List returns every tenant, ordered by creation then id. The slice is a
// snapshot shared by all callers until the next change (the webhooks
// fan-out lists tenants for every event): do not modify it.
func (r *Registry) List() []*schemas.Tenant {
	r.mu.RLock()
	out := r.list
	r.mu.RUnlock()
	if out != nil {
		return out
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.list != nil {
		return r.list
	}
	out = make([]*schemas.Tenant, 0, len(r.tenants))
	for _, t := range r.tenants {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	r.list = out
	return out
}

// Len returns the number of tenants.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.tenants)
}

// ByKeyHash returns the tenant owning the key with this hash, if the key is
// still valid at now (a rotated key stays valid until its expiry).
func (r *Registry) ByKeyHash(hash string, now time.Time) (*schemas.Tenant, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byKeyHash[hash]
	if !ok {
		return nil, false
	}
	t := r.tenants[id]
	for _, k := range t.Keys {
		// The map lookup found the hash; the constant-time compare guards
		// against a future index that matches on a prefix.
		if apikey.Equal(k.Hash, hash) {
			if k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
				return nil, false
			}
			return t, true
		}
	}
	return nil, false
}

// WaitVersion blocks until tenant id is at version v or newer, or ctx ends.
func (r *Registry) WaitVersion(ctx context.Context, id string, v int64) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.applied[id] < v {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tenant %s version %d not applied: %w", id, v, err)
		}
		r.cond.Wait()
	}
	return nil
}

// Apply applies one record of the tenants topic. A record that cannot be
// decoded is logged (without its contents: it may hold secrets) and skipped.
func (r *Registry) Apply(rec *kgo.Record) {
	id := string(rec.Key)
	if len(rec.Value) == 0 { // tombstone
		r.apply(id, nil)
		return
	}
	var t schemas.Tenant
	if err := json.Unmarshal(rec.Value, &t); err != nil || t.ID == "" || t.ID != id {
		if err == nil {
			err = fmt.Errorf("record key %q does not match tenant id %q", id, t.ID)
		}
		r.skipped.Inc()
		r.log.Error("skipping undecodable tenant record", "partition", rec.Partition, "offset", rec.Offset, "reason", safeReason(err))
		return
	}
	if !rec.Timestamp.IsZero() {
		r.lastLag.Set(time.Since(rec.Timestamp).Seconds())
	}
	r.apply(id, &t)
}

// safeReason describes a decode error without quoting input bytes.
func safeReason(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %s: wrong type %s", te.Field, te.Value)
	default:
		return err.Error()
	}
}

func (r *Registry) apply(id string, t *schemas.Tenant) {
	r.mu.Lock()
	old := r.tenants[id]
	if t != nil && old != nil && t.Version <= old.Version {
		r.mu.Unlock()
		return // stale or duplicate (a producer retry)
	}
	if old != nil {
		for _, k := range old.Keys {
			delete(r.byKeyHash, k.Hash)
		}
		delete(r.byName, strings.ToLower(old.Name))
	}
	if t == nil {
		delete(r.tenants, id)
		r.applied[id] = 1 << 62
	} else {
		r.tenants[id] = t
		for _, k := range t.Keys {
			r.byKeyHash[k.Hash] = id
		}
		r.byName[strings.ToLower(t.Name)] = id
		r.applied[id] = t.Version
	}
	r.list = nil
	watchers := r.watchers
	r.applies.Inc()
	r.cond.Broadcast()
	r.mu.Unlock()
	for _, w := range watchers {
		if !w.cancelled.Load() {
			w.fn(old, t)
		}
	}
}

// Run reads the tenants topic from the start to its current end (then Ready
// is closed) and follows it until ctx ends. cl must be a client without a
// consumer group; Run assigns it every partition of the topic.
func (r *Registry) Run(ctx context.Context, cl *kgo.Client) error {
	adm := kadm.NewClient(cl)
	var ends kadm.ListedOffsets
	for {
		var err error
		ends, err = adm.ListEndOffsets(ctx, r.topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil {
			break
		}
		r.log.Warn("tenants topic not readable yet", "topic", r.topic, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	pending := map[int32]int64{}
	assign := map[string]map[int32]kgo.Offset{r.topic: {}}
	ends.Each(func(o kadm.ListedOffset) {
		assign[r.topic][o.Partition] = kgo.NewOffset().AtStart()
		if o.Offset > 0 {
			pending[o.Partition] = o.Offset
		}
	})
	cl.AddConsumePartitions(assign)
	defer cl.RemoveConsumePartitions(map[string][]int32{r.topic: partitionsOf(assign[r.topic])})
	start := time.Now()
	n := 0
	markReady := func() {
		select {
		case <-r.ready:
		default:
			r.log.Info("registry loaded", "tenants", r.Len(), "records", n, "took", time.Since(start).Round(time.Millisecond))
			close(r.ready)
		}
	}
	if len(pending) == 0 {
		markReady()
	}
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			r.log.Warn("tenants fetch error", "topic", topic, "partition", p, "err", err)
		})
		fetches.EachRecord(func(rec *kgo.Record) {
			n++
			r.Apply(rec)
			if end, ok := pending[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(pending, rec.Partition)
			}
		})
		if len(pending) == 0 {
			markReady()
		}
	}
}

func partitionsOf(m map[int32]kgo.Offset) []int32 {
	out := make([]int32, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	return out
}
