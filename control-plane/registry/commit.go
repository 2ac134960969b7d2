package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/seal"
	"github.com/partners-engine/partners-engine/schemas"
)

// The compare-and-set write of the package doc: one transactional producer
// per partition of the tenants topic, shared by the process's writes on that
// partition (one at a time), fenced by any other process that writes there.

// ConflictError is a write that lost: the tenant is not at the version the
// change was computed from (or the caller's If-Match named), or the name it
// takes is another tenant's. It matches ErrConflict.
type ConflictError struct {
	ID      string // the tenant
	Current int64  // its version now; 0 when it does not exist or for a name conflict
	Reason  string
}

func (e *ConflictError) Error() string {
	if e.Reason != "" {
		return "conflict: " + e.Reason
	}
	return fmt.Sprintf("conflict: tenant %s changed concurrently and is now at version %d; re-read it and retry", e.ID, e.Current)
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// TooLargeError is a change whose record would exceed MaxRecordBytes.
type TooLargeError struct {
	Size, Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the tenant record would be %d bytes, over the limit of %d: remove endpoints, event types, features or mapping fields", e.Size, e.Limit)
}

// Unwrap makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// ErrTooLarge is matched by a TooLargeError.
var ErrTooLarge = errors.New("tenant record too large")

// MaxRecordBytes bounds a tenant record: far below the broker's default
// message.max.bytes (1 MiB), so a tenant is refused when written rather than
// by the broker.
const MaxRecordBytes = 256 << 10

type expectKey struct{}

// WithExpectedVersion makes the writes made with ctx conditional: they apply
// only if the tenant is at version v when written (HTTP If-Match), and fail
// with a ConflictError otherwise.
func WithExpectedVersion(ctx context.Context, v int64) context.Context {
	return context.WithValue(ctx, expectKey{}, v)
}

func expectedVersion(ctx context.Context) (int64, bool) {
	v, ok := ctx.Value(expectKey{}).(int64)
	return v, ok
}

// errFenced: another process's writer took the partition between our
// produce and our commit; nothing was written.
var errFenced = errors.New("fenced by another writer of the partition")

type partWriter struct {
	mu sync.Mutex  // one transaction at a time on the partition in this process
	cl *kgo.Client // nil until first use and after any error
}

func (w *Writer) part(p int32) *partWriter {
	w.pmu.Lock()
	defer w.pmu.Unlock()
	pw, ok := w.parts[p]
	if !ok {
		pw = &partWriter{}
		w.parts[p] = pw
	}
	return pw
}

// TransactionalID is the transactional id of partition p's writer: the same
// in every process, which is what fences them against each other.
func TransactionalID(topic string, p int32) string {
	return topic + ".writer." + strconv.Itoa(int(p))
}

func (w *Writer) client(pw *partWriter, p int32) (*kgo.Client, error) {
	if pw.cl != nil {
		return pw.cl, nil
	}
	opts := append(w.base.Opts()[:len(w.base.Opts()):len(w.base.Opts())],
		kgo.TransactionalID(TransactionalID(w.opt.Topic, p)),
		kgo.TransactionTimeout(w.opt.TxnTimeout),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("tenants writer client: %w", err)
	}
	pw.cl = cl
	return cl, nil
}

func (pw *partWriter) reset() {
	if pw.cl != nil {
		pw.cl.Close()
		pw.cl = nil
	}
}

// Close closes the writer's transactional clients. Writes after Close open
// new ones.
func (w *Writer) Close() {
	w.pmu.Lock()
	parts := make([]*partWriter, 0, len(w.parts))
	for _, pw := range w.parts {
		parts = append(parts, pw)
	}
	w.pmu.Unlock()
	for _, pw := range parts {
		pw.mu.Lock()
		pw.reset()
		pw.mu.Unlock()
	}
}

// namePartition is the partition a new tenant named name is written to:
// two creations of one name meet on one partition, where the second sees
// the first.
func namePartition(name string, n int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(name)))
	return int32(h.Sum32() % uint32(n))
}

// commit writes t, version base+1 of tenant t.ID (base 0: a new tenant), to
// partition p, if the tenant is still at base once everything before the
// record is read, and check (optional) still passes then. It returns after
// the registry applied t. See the package doc for why this is safe.
func (w *Writer) commit(ctx context.Context, p int32, t *schemas.Tenant, base int64, check func() error) error {
	val, err := w.encode(t)
	if err != nil {
		return err
	}
	pw := w.part(p)
	pw.mu.Lock()
	defer pw.mu.Unlock()
	backoff := 2 * time.Millisecond
	for {
		err := w.try(ctx, pw, p, t, val, base, check)
		if !errors.Is(err, errFenced) {
			return err
		}
		w.fenced.Inc()
		// Another process writes this partition right now: let it finish.
		// The jitter keeps two processes from fencing each other forever.
		d := backoff/2 + rand.N(backoff)
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("write tenant %s: %w", t.ID, ctx.Err())
		case <-time.After(d):
		}
	}
}

func (w *Writer) try(ctx context.Context, pw *partWriter, p int32, t *schemas.Tenant, val []byte, base int64, check func() error) error {
	cl, err := w.client(pw, p)
	if err != nil {
		return err
	}
	if err := cl.BeginTransaction(); err != nil {
		pw.reset()
		return fmt.Errorf("write tenant %s: begin: %w", t.ID, err)
	}
	rec := &kgo.Record{Topic: w.opt.Topic, Partition: p, Key: []byte(t.ID), Value: val}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		abort(cl)
		pw.reset()
		if isFenced(err) {
			return errFenced
		}
		return fmt.Errorf("write tenant %s: %w", t.ID, err)
	}
	// The transaction is open and ours: nothing can be committed on the
	// partition before it ends. Read up to our record, then decide.
	wctx, cancel := context.WithTimeout(ctx, w.opt.ApplyTimeout)
	defer cancel()
	if err := w.reg.waitPosition(wctx, p, rec.Offset); err != nil {
		abort(cl)
		pw.reset()
		return fmt.Errorf("write tenant %s: %w", t.ID, err)
	}
	if err := w.still(t.ID, base, check); err != nil {
		if aerr := abort(cl); aerr != nil {
			pw.reset()
		}
		return err
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		pw.reset()
		if isFenced(err) {
			return errFenced
		}
		// The commit may or may not have happened: the markers after our
		// record tell. Ours applied: done; otherwise start again.
		if oerr := w.reg.waitPosition(wctx, p, rec.Offset+1); oerr != nil {
			return fmt.Errorf("write tenant %s: outcome unknown (%v): %w", t.ID, err, oerr)
		}
		if w.reg.appliedFrom(t.ID, p, rec.Offset) {
			return nil
		}
		return errFenced
	}
	if err := w.reg.WaitVersion(wctx, t.ID, t.Version); err != nil {
		return fmt.Errorf("write tenant %s: committed but not yet applied here: %w", t.ID, err)
	}
	return nil
}

// still checks, once the registry has read everything before the write,
// that the tenant is at base and check passes.
func (w *Writer) still(id string, base int64, check func() error) error {
	cur, _, ok := w.reg.version(id)
	if base == 0 && ok {
		return &ConflictError{ID: id, Current: cur, Reason: "tenant " + id + " already exists"}
	}
	if base > 0 && (!ok || cur != base) {
		return &ConflictError{ID: id, Current: cur}
	}
	if check != nil {
		return check()
	}
	return nil
}

func abort(cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cl.EndTransaction(ctx, kgo.TryAbort)
}

func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.InvalidProducerIDMapping) || errors.Is(err, kerr.TransactionAbortable) ||
		errors.Is(err, kerr.ConcurrentTransactions)
}

// encode returns t as it is stored: webhook secrets sealed with the active
// key (a secret already sealed with it keeps its sealed value; one sealed
// with a key this process lacks is kept as it is), no plaintext.
func (w *Writer) encode(t *schemas.Tenant) ([]byte, error) {
	out := *t
	out.Endpoints = make([]schemas.Endpoint, len(t.Endpoints))
	for i, e := range t.Endpoints {
		e.Secrets = append([]schemas.WebhookSecret(nil), e.Secrets...)
		for j := range e.Secrets {
			s := &e.Secrets[j]
			if s.Secret == "" {
				continue // sealed with a key not configured here: keep it
			}
			if k, ok := seal.KeyID(s.Sealed); !ok || k != w.opt.Secrets.Active() {
				sealed, err := w.opt.Secrets.Seal([]byte(s.Secret), SecretAAD(t.ID, e.ID, s.ID))
				if err != nil {
					return nil, err
				}
				s.Sealed = sealed
			}
			s.Secret = ""
		}
		out.Endpoints[i] = e
	}
	b, err := json.Marshal(&out)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRecordBytes {
		return nil, &TooLargeError{Size: len(b), Limit: MaxRecordBytes}
	}
	return b, nil
}
