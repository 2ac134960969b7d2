// Package registry owns the tenants: the in-memory view of the compacted
// partners.tenants.v1 topic (the source of truth) with a key-hash index, the
// change notifications the control plane, edge and processors follow
// (OnChange, with a cancel), and the Writer, the one path by which tenants
// change (the admin API of any process, and the webhooks processor disabling
// an endpoint on a 410). New builds; Run follows the topic until its context
// ends.
//
// # Serialised writes
//
// Every process reads the topic with read_committed isolation and may write
// it, so the Writer cannot trust its own copy of a tenant to be the latest:
// another process may have written a newer version a moment ago. Writes are
// therefore compare-and-set on the tenant's version, made safe by Kafka
// transactions with one transactional id per partition of the topic
// (<topic>.writer.<partition>):
//
//  1. The Writer computes the new tenant from the version it holds (v), or
//     from the version the caller named (If-Match), and opens a transaction
//     on the tenant's partition. Its first produce there makes the broker
//     fence every other producer of that transactional id: a transaction
//     another process still has open is aborted, and that process can no
//     longer commit anything on the partition.
//  2. The record is produced at offset O inside the open transaction. No
//     other writer can commit on the partition until this transaction ends,
//     so everything that will ever precede O is already in the log. The
//     Writer waits until its registry has read the partition up to O (the
//     registry keeps commit and abort markers for exactly this), then
//     checks that the tenant is still at version v.
//  3. Still at v: commit, and wait until the registry applied v+1 (the
//     caller reads its own write). Not at v: abort, and answer ErrConflict
//     with the current version (HTTP 409). Fenced by another process
//     between 1 and 3: the commit fails, nothing was written, and the
//     Writer starts again from 1 with the same base version — if another
//     writer changed the tenant meanwhile, that is a conflict too.
//
// So a committed record is always version+1 of the previous committed one,
// every registry (read_committed) applies exactly the committed records in
// partition order, and a caller that got success is never overwritten
// silently. A writer that crashes after producing leaves an open
// transaction: no reader sees it, the next writer of the partition aborts
// it at once (fencing), and the transaction timeout aborts it otherwise. A
// crash after the commit leaves a committed change the caller was not told
// about; re-reading shows it. Producer retries cannot duplicate a record
// (transactional producers are idempotent), and a duplicate version would
// be ignored anyway. Tenant names are unique: a new tenant's record goes to
// the partition of its lower-cased name, so two processes creating the
// same name meet on one partition and one of them gets ErrConflict.
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
	log      *slog.Logger
	topic    string
	secret   Opener      // opens sealed webhook secrets; nil: records carry them in the clear
	dlq      *kgo.Client // WithDeadLetters; nil: undecodable records are only logged and counted
	dlqTopic string

	mu         sync.RWMutex
	tenants    map[string]*schemas.Tenant
	byKeyHash  map[string]string   // key hash -> tenant id
	byName     map[string]string   // lower-case name -> tenant id
	list       []*schemas.Tenant   // sorted snapshot for List; nil after a change
	watchers   []*watcher          // replaced, never modified in place: apply iterates a copy
	applied    map[string]int64    // tenant id -> version, for read-your-writes
	partOf     map[string]int32    // tenant id -> partition its records are on
	at         map[string]int64    // tenant id -> offset of the record its current version came from
	keyIDs     map[string][]string // tenant id -> key ids sealing its webhook secrets ("" for plaintext)
	pos        map[int32]int64     // partition -> next offset to read (control records included)
	nparts     int32               // partitions of the topic, once Run listed them
	cond       *sync.Cond
	ready      chan struct{}
	listed     chan struct{} // closed once nparts is known
	listedOnce sync.Once
	adm        *kadm.Client // Run's client, for Sync

	skipped  prometheus.Counter
	applies  prometheus.Counter
	lastLag  prometheus.Gauge
	unsealed prometheus.Counter
}

// Opener opens the webhook secrets sealed in tenant records (internal/seal's
// Keyring). aad binds a sealed value to its place in the record.
type Opener interface {
	Open(sealed string, aad []byte) (plain []byte, keyID string, err error)
}

// Option configures a Registry.
type Option func(*Registry)

// WithSecrets opens the sealed webhook secrets of the records with o. A
// registry without it keeps a sealed secret unreadable (an empty Secret),
// which the edge and control plane never need.
func WithSecrets(o Opener) Option { return func(r *Registry) { r.secret = o } }

// ConsumerOpts are the options the client given to Run must be built with:
// read_committed isolation (a record of an aborted or still open write is
// never applied) and control records kept (the Writer waits for the
// registry to pass a position, commit and abort markers included).
func ConsumerOpts() []kgo.Opt {
	return []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords()}
}

// New returns an empty registry reading topic, its metrics registered with
// reg (nil: not registered). It starts nothing: Run reads the topic.
func New(topic string, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Registry, error) {
	r := &Registry{
		log:       log.With("component", "registry"),
		topic:     topic,
		tenants:   map[string]*schemas.Tenant{},
		byKeyHash: map[string]string{},
		byName:    map[string]string{},
		applied:   map[string]int64{},
		partOf:    map[string]int32{},
		at:        map[string]int64{},
		keyIDs:    map[string][]string{},
		pos:       map[int32]int64{},
		ready:     make(chan struct{}),
		listed:    make(chan struct{}),
		unsealed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_registry_secrets_unreadable_total", Help: "Sealed webhook secrets that no configured key opens (the endpoint cannot sign until re-encrypted)."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_registry_records_skipped_total", Help: "Tenant records that could not be decoded and were skipped."}),
		applies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partners_registry_changes_applied_total", Help: "Tenant changes applied from the tenants topic."}),
		lastLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "partners_registry_apply_delay_seconds", Help: "Delay between a tenant record's timestamp and its application, last record."}),
	}
	for _, o := range opts {
		o(r)
	}
	r.cond = sync.NewCond(&r.mu)
	if reg != nil {
		for _, c := range []prometheus.Collector{r.skipped, r.applies, r.lastLag, r.unsealed} {
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

// waitPosition blocks until the registry has read partition p up to offset
// off (every record before off applied or skipped, markers included), or
// ctx ends.
func (r *Registry) waitPosition(ctx context.Context, p int32, off int64) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.pos[p] < off {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tenants partition %d not read up to offset %d (at %d): %w", p, off, r.pos[p], err)
		}
		r.cond.Wait()
	}
	return nil
}

// version returns the version of tenant id the registry holds (0: none)
// and the partition its records are on.
func (r *Registry) version(id string) (v int64, partition int32, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.tenants[id]
	if !ok {
		return 0, 0, false
	}
	return t.Version, r.partOf[id], true
}

// Sync waits until the registry has read every partition of the topic up to
// its last stable offset now: a change another process committed before
// Sync was called is then visible here. The admin API syncs before it
// answers that a tenant does not exist (one created a moment ago on another
// process is found).
func (r *Registry) Sync(ctx context.Context) error {
	r.mu.RLock()
	adm := r.adm
	r.mu.RUnlock()
	if adm == nil {
		return errors.New("registry not running")
	}
	ends, err := adm.ListCommittedOffsets(ctx, r.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("tenants topic offsets: %w", err)
	}
	var werr error
	ends.Each(func(o kadm.ListedOffset) {
		if werr == nil && o.Offset > 0 {
			werr = r.waitPosition(ctx, o.Partition, o.Offset)
		}
	})
	return werr
}

// GetSynced is Get, but a tenant not found is looked up again after Sync.
func (r *Registry) GetSynced(ctx context.Context, id string) (*schemas.Tenant, bool) {
	if t, ok := r.Get(id); ok {
		return t, true
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.Sync(sctx); err != nil {
		r.log.Warn("registry sync failed", "err", err)
	}
	return r.Get(id)
}

// Partition returns the partition of the tenants topic tenant id's records
// are on.
func (r *Registry) Partition(id string) (int32, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.partOf[id]
	return p, ok
}

// appliedFrom reports whether tenant id's current version came from the
// record at offset off of partition p.
func (r *Registry) appliedFrom(id string, p int32, off int64) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.tenants[id]
	return ok && r.partOf[id] == p && r.at[id] == off
}

// partitions returns the partition count of the topic once Run listed it.
func (r *Registry) partitions(ctx context.Context) (int32, error) {
	select {
	case <-r.listed:
	case <-ctx.Done():
		return 0, fmt.Errorf("tenants topic not listed yet: %w", ctx.Err())
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.nparts, nil
}

// StaleSecrets returns the ids of the tenants whose webhook secrets are
// stored in the clear or sealed with a key other than active: the ones a
// re-encryption has to rewrite.
func (r *Registry) StaleSecrets(active string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for id, keys := range r.keyIDs {
		if slices.ContainsFunc(keys, func(k string) bool { return k != active }) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Apply applies one record of the tenants topic. A record that cannot be
// decoded is logged (without its contents: it may hold secrets), counted,
// dead-lettered (WithDeadLetters) and skipped.
// A control record (a transaction's commit or abort marker) only moves the
// registry's position.
func (r *Registry) Apply(rec *kgo.Record) {
	defer r.advance(rec.Partition, rec.Offset+1)
	if rec.Attrs.IsControl() {
		return
	}
	id := string(rec.Key)
	if len(rec.Value) == 0 { // tombstone
		r.apply(id, rec.Partition, rec.Offset, nil, nil)
		return
	}
	var t schemas.Tenant
	if err := json.Unmarshal(rec.Value, &t); err != nil || t.ID == "" || t.ID != id {
		if err == nil {
			err = fmt.Errorf("record key %q does not match tenant id %q", schemas.TruncateUTF8(id, 128), schemas.TruncateUTF8(t.ID, 128))
		}
		r.skipped.Inc()
		r.log.Error("skipping undecodable tenant record", "partition", rec.Partition, "offset", rec.Offset, "reason", safeReason(err))
		r.deadLetter(rec, safeReason(err))
		return
	}
	keyIDs := r.open(&t)
	if !rec.Timestamp.IsZero() {
		r.lastLag.Set(time.Since(rec.Timestamp).Seconds())
	}
	r.apply(id, rec.Partition, rec.Offset, keyIDs, &t)
}

// open replaces the sealed webhook secrets of t by their plaintext and
// returns the key ids that sealed them ("" for a secret in the clear). A
// secret no key opens stays empty and is counted: the tenant itself must
// not vanish from the edge because a webhook key is missing.
func (r *Registry) open(t *schemas.Tenant) []string {
	var keys []string
	for i := range t.Endpoints {
		e := &t.Endpoints[i]
		for j := range e.Secrets {
			s := &e.Secrets[j]
			k := ""
			if s.Sealed != "" {
				plain, kid, err := r.openOne(s.Sealed, SecretAAD(t.ID, e.ID, s.ID))
				k = kid
				if err != nil {
					r.unsealed.Inc()
					r.log.Error("webhook secret cannot be opened", "tenant_id", t.ID, "endpoint_id", e.ID, "secret_id", s.ID, "reason", err.Error())
				} else {
					s.Secret = string(plain)
				}
			}
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

func (r *Registry) openOne(sealed string, aad []byte) ([]byte, string, error) {
	if r.secret == nil {
		return nil, "?", errors.New("no webhook secret keys configured")
	}
	return r.secret.Open(sealed, aad)
}

// SecretAAD is the additional data a webhook secret is sealed with: it
// binds the ciphertext to its tenant, endpoint and secret id, so a sealed
// value copied into another record does not open.
func SecretAAD(tenantID, endpointID, secretID string) []byte {
	return []byte("partners.tenants.v1/" + tenantID + "/" + endpointID + "/" + secretID)
}

func (r *Registry) advance(p int32, next int64) {
	r.mu.Lock()
	if next > r.pos[p] {
		r.pos[p] = next
		r.cond.Broadcast()
	}
	r.mu.Unlock()
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

func (r *Registry) apply(id string, partition int32, offset int64, keyIDs []string, t *schemas.Tenant) {
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
		delete(r.partOf, id)
		delete(r.keyIDs, id)
		delete(r.at, id)
	} else {
		r.tenants[id] = t
		for _, k := range t.Keys {
			r.byKeyHash[k.Hash] = id
		}
		r.byName[strings.ToLower(t.Name)] = id
		r.partOf[id] = partition
		r.at[id] = offset
		r.keyIDs[id] = keyIDs
	}
	r.list = nil
	watchers := r.watchers
	r.applies.Inc()
	r.mu.Unlock()
	for _, w := range watchers {
		if !w.cancelled.Load() {
			w.fn(old, t)
		}
	}
	// Read-your-writes waiters (WaitVersion) are released only now: when an
	// admin write returns, every change function in the process has run (the
	// plugin evicted its cached tenant), so the next Check answers with it.
	r.mu.Lock()
	if t == nil {
		r.applied[id] = 1 << 62
	} else {
		r.applied[id] = t.Version
	}
	r.cond.Broadcast()
	r.mu.Unlock()
}

// Run reads the tenants topic from the start to its last stable offset at
// start (then Ready is closed) and follows it until ctx ends. cl must be a
// client without a consumer group, built with ConsumerOpts; Run assigns it
// every partition of the topic.
func (r *Registry) Run(ctx context.Context, cl *kgo.Client) error {
	if lvl, _ := cl.OptValue(kgo.FetchIsolationLevel).(int8); lvl != 1 {
		return errors.New("registry: the client must read committed records (build it with registry.ConsumerOpts)")
	}
	if keep, _ := cl.OptValue(kgo.KeepControlRecords).(bool); !keep {
		return errors.New("registry: the client must keep control records (build it with registry.ConsumerOpts)")
	}
	adm := kadm.NewClient(cl)
	r.mu.Lock()
	r.adm = adm
	r.mu.Unlock()
	var ends kadm.ListedOffsets
	for {
		var err error
		ends, err = adm.ListCommittedOffsets(ctx, r.topic)
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
	r.mu.Lock()
	r.nparts = int32(len(assign[r.topic]))
	r.mu.Unlock()
	r.listedOnce.Do(func() { close(r.listed) })
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
			if !rec.Attrs.IsControl() {
				n++
			}
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
