package webhooks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// ReplayRequest selects dead letters to deliver again.
type ReplayRequest struct {
	Filter DLQFilter
	// Force also replays what was already replayed (status replayed,
	// delivered or dropped) and, in an unfiltered replay, dead letters of
	// deliveries replayed before.
	Force bool
}

// ReplayResult is what a replay did.
type ReplayResult struct {
	ReplayID string `json:"replay_id,omitempty"`
	Replayed int    `json:"replayed"`
	// Skipped are matching dead letters that are no delivery (malformed
	// input): listed, never replayed.
	Skipped int `json:"skipped"`
}

// ErrNotReplayable marks dead letters that carry no delivery (malformed input).
var ErrNotReplayable = errors.New("not a delivery")

// ErrEndpointState is returned by Recover for an endpoint that cannot take
// deliveries now (disabled, or its tenant not active).
var ErrEndpointState = errors.New("endpoint cannot take deliveries")

// ErrUnknownEndpoint is returned by Recover for an endpoint that does not exist.
var ErrUnknownEndpoint = errors.New("no such endpoint")

const replayChunk = 500

// Replay puts the selected dead letters back: each goes to
// partners.webhooks.retry.1 (the FIFO topic for an ordered endpoint), due
// now, with its original webhook-id and payload, a fresh attempt budget
// and max age, and its index entry marked replayed, in one Kafka
// transaction per chunk of 500. Replays are idempotent: only dead letters
// in state dead are selected (unless forced), so replaying the same
// selection twice sends each delivery once; an unfiltered replay leaves
// out dead letters of deliveries replayed before (they failed again after a
// replay: replaying everything again would loop), and a filtered one
// takes them. The transactional id is the same on every instance, so two
// concurrent replays fence each other instead of both sending, and the
// selection is read after the index caught up with every committed replay.
func (p *Processor) Replay(ctx context.Context, req ReplayRequest) (ReplayResult, error) {
	// One at a time per process (across processes the transactional id
	// fences): a second call waits rather than fencing the first.
	p.replayMu.Lock()
	defer p.replayMu.Unlock()
	if err := p.index.waitReady(ctx); err != nil {
		return ReplayResult{}, err
	}
	txnID := p.kafka.Group("webhooks-replay")
	cl, err := p.kafka.NewClient(kgo.TransactionalID(txnID), kgo.TransactionTimeout(30*time.Second))
	if err != nil {
		return ReplayResult{}, err
	}
	defer cl.Close()
	// Fence any replay still open elsewhere, then read the index as every
	// committed replay left it.
	if _, _, err := cl.ProducerID(ctx); err != nil {
		return ReplayResult{}, fmt.Errorf("replay producer: %w", err)
	}
	adm := kadm.NewClient(cl)
	if err := p.index.waitFor(ctx, adm); err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{ReplayID: "rpl_" + randomHex(8)}
	var sel []*DLQEntry
	f := req.Filter
	if req.Force {
		f.Status = "all"
	}
	unfiltered := req.Filter.unfiltered()
	err = p.index.each(f, func(e *DLQEntry) bool {
		switch {
		case !e.replayable:
			res.Skipped++
		case unfiltered && e.Replays > 0 && !req.Force:
		default:
			sel = append(sel, e)
		}
		return true
	})
	if err != nil {
		return ReplayResult{}, err
	}
	// Oldest first, so the backlog drains in the order it failed.
	slices.Reverse(sel)
	for len(sel) > 0 {
		chunk := sel[:min(replayChunk, len(sel))]
		sel = sel[len(chunk):]
		n, err := p.replayChunk(ctx, cl, chunk, res.ReplayID)
		res.Replayed += n
		if err != nil {
			return res, err
		}
	}
	p.m.replayed.Add(float64(res.Replayed))
	// Read-your-writes: a listing right after shows the replayed state.
	if err := p.index.waitFor(ctx, adm); err != nil {
		return res, err
	}
	p.log.Info("DLQ replayed", "replay_id", res.ReplayID, "replayed", res.Replayed, "skipped", res.Skipped,
		"tenant_id", req.Filter.Tenant, "endpoint_id", req.Filter.Endpoint, "event_type", req.Filter.EventType, "force", req.Force)
	return res, nil
}

// replayChunk replays entries in one transaction.
func (p *Processor) replayChunk(ctx context.Context, cl *kgo.Client, chunk []*DLQEntry, replayID string) (int, error) {
	recs, err := p.fetchIndexRecords(ctx, chunk)
	if err != nil {
		return 0, err
	}
	if err := cl.BeginTransaction(); err != nil {
		return 0, fmt.Errorf("replay: begin transaction: %w", err)
	}
	now := time.Now().UTC()
	var mu sync.Mutex
	var failed error
	produce := func(r *kgo.Record) {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil && failed == nil {
				failed = err
			}
		})
	}
	n := 0
	for _, e := range chunk {
		rec, ok := recs[e.Key]
		if !ok {
			continue // superseded since it was selected (compacted away)
		}
		d := rec.DeadLetter
		t := Task{SchemaVersion: schemas.SchemaVersion, DeliveryID: d.DeliveryID, TenantID: d.TenantID,
			EndpointID: d.EndpointID, EventID: d.EventID, EventType: d.EventType, Stage: 1, Attempts: d.Attempts,
			NotBefore: now, Since: now, FirstAttemptAt: d.FirstAttemptAt, LastAttemptAt: d.LastAttemptAt,
			LastStatus: d.LastStatus, LastError: d.LastError, TraceID: d.TraceID, Replayed: true, Replays: d.Replays + 1,
			ReplayID: replayID, DeadAt: rec.DeadAt, Render: d.PayloadKind == "event", Body: []byte(d.Payload)}
		if ten, ok := p.tenants.Get(t.TenantID); ok {
			for _, ep := range ten.Endpoints {
				if ep.ID == t.EndpointID && ep.FIFO() {
					t.FIFO, t.Stage = true, 0
				}
			}
		}
		var r *kgo.Record
		if t.FIFO {
			r = p.record(ctx, p.names.Topic(schemas.TopicFIFO), t.EndpointID, t)
		} else {
			r = p.taskRecord(ctx, t, 1)
		}
		kafka.SetHeader(r, "replayed-from", fmt.Sprintf("%s/%d/%d", p.index.topic, e.Partition, e.Offset))
		produce(r)
		up := rec
		up.Replays, up.Status, up.ReplayID, up.UpdatedAt = d.Replays+1, statusReplayed, replayID, now
		produce(p.record(ctx, p.index.topic, e.Key, up))
		n++
	}
	flushErr := cl.Flush(ctx)
	mu.Lock()
	if flushErr != nil && failed == nil {
		failed = flushErr
	}
	mu.Unlock()
	commit := kgo.TryCommit
	if failed != nil {
		commit = kgo.TryAbort
	}
	if err := cl.EndTransaction(ctx, commit); err != nil {
		return 0, fmt.Errorf("replay: end transaction: %w", err)
	}
	if failed != nil {
		return 0, fmt.Errorf("replay aborted, nothing of this chunk was replayed: %w", failed)
	}
	return n, nil
}

// fetchIndexRecords reads the index records of entries (their payloads):
// per partition from the lowest offset wanted to the highest.
func (p *Processor) fetchIndexRecords(ctx context.Context, es []*DLQEntry) (map[string]indexRecord, error) {
	want := map[int32]map[int64]string{}
	for _, e := range es {
		if want[e.Partition] == nil {
			want[e.Partition] = map[int64]string{}
		}
		want[e.Partition][e.Offset] = e.Key
	}
	from := map[int32]kgo.Offset{}
	last := map[int32]int64{}
	for part, offs := range want {
		keys := make([]int64, 0, len(offs))
		for o := range offs {
			keys = append(keys, o)
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
		from[part] = kgo.NewOffset().At(keys[0])
		last[part] = keys[len(keys)-1]
	}
	cl, err := p.kafka.NewClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.index.topic: from}), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out := map[string]indexRecord{}
	for len(last) > 0 {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading dead letters to replay: %w", ctx.Err())
		}
		if fs.NumRecords() == 0 {
			break // the end: what was not found was superseded since
		}
		fs.EachRecord(func(r *kgo.Record) {
			if key, ok := want[r.Partition][r.Offset]; ok && string(r.Key) == key {
				if rec, err := decodeIndexRecord(r.Value); err == nil {
					out[key] = rec
				}
			}
			if end, ok := last[r.Partition]; ok && r.Offset >= end {
				delete(last, r.Partition)
			}
		})
	}
	return out, nil
}

// Recover re-delivers the failed deliveries of one endpoint that were
// dead-lettered at or after since (including ones that failed again after
// a replay), oldest first. The endpoint must exist and be able to take
// deliveries: enable it first if a 410 disabled it.
func (p *Processor) Recover(ctx context.Context, endpointID string, since time.Time) (ReplayResult, error) {
	var ten *schemas.Tenant
	var ep *schemas.Endpoint
	for _, t := range p.tenants.List() {
		for i := range t.Endpoints {
			if t.Endpoints[i].ID == endpointID {
				ten, ep = t, &t.Endpoints[i]
			}
		}
	}
	switch {
	case ep == nil:
		return ReplayResult{}, fmt.Errorf("%w: %s", ErrUnknownEndpoint, endpointID)
	case ten.Status != schemas.StatusActive:
		return ReplayResult{}, fmt.Errorf("%w: tenant %s is %s", ErrEndpointState, ten.ID, ten.Status)
	case ep.Disabled:
		return ReplayResult{}, fmt.Errorf("%w: endpoint %s is disabled (%s); enable it first", ErrEndpointState, ep.ID, ep.DisabledReason)
	}
	return p.Replay(ctx, ReplayRequest{Filter: DLQFilter{Tenant: ten.ID, Endpoint: endpointID, Since: since}})
}

// ListDLQ returns a page of dead letters matching f from the index, newest
// first, and the next page's token.
func (p *Processor) ListDLQ(ctx context.Context, f DLQFilter) ([]DLQEntry, string, error) {
	if err := p.index.waitReady(ctx); err != nil {
		return nil, "", err
	}
	return p.index.List(f)
}

// ParseSince parses an RFC 3339 time or a Go duration ("24h": that long ago).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time or a duration like 24h", s)
	}
	return now.Add(-d), nil
}
