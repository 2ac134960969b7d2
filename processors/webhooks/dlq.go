package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// DLQFilter selects dead letters. Empty fields match everything.
type DLQFilter struct {
	Tenant    string
	EventType string
	Since     time.Time // last attempt (or record time) at or after
	Limit     int       // List only; 0: no limit
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

// DeadLetterEntry is a dead letter with its position on the DLQ topic.
type DeadLetterEntry struct {
	schemas.DeadLetter
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"-"`
}

func (f DLQFilter) match(e *DeadLetterEntry) bool {
	if f.Tenant != "" && e.TenantID != f.Tenant {
		return false
	}
	if f.EventType != "" && e.EventType != f.EventType {
		return false
	}
	if !f.Since.IsZero() {
		at := e.LastAttemptAt
		if at.IsZero() {
			at = e.Timestamp
		}
		if at.Before(f.Since) {
			return false
		}
	}
	return true
}

// scanDLQ reads the DLQ topic from its start to its current end and calls fn
// for every dead letter matching f, in partition then offset order per poll.
func (p *Processor) scanDLQ(ctx context.Context, f DLQFilter, fn func(*DeadLetterEntry) bool) error {
	topic := p.names.Topic(schemas.TopicDLQ)
	cl, err := p.kafka.NewClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("DLQ end offsets: %w", err)
	}
	want := map[int32]int64{}
	assign := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			assign[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign})
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for len(want) > 0 {
		// A transaction's last offset is its commit marker, never
		// returned as a record: an idle poll means the end was reached.
		pctx, pcancel := context.WithTimeout(ctx, 750*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n := 0
		stop := false
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if end, ok := want[r.Partition]; ok && r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			if stop || r.Offset >= ends[topic][r.Partition].Offset {
				return
			}
			e := &DeadLetterEntry{Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp}
			if err := json.Unmarshal(r.Value, &e.DeadLetter); err != nil {
				p.log.Warn("undecodable DLQ record skipped", "partition", r.Partition, "offset", r.Offset)
				return
			}
			if f.match(e) && !fn(e) {
				stop = true
			}
		})
		if stop || n == 0 {
			return nil
		}
	}
	return nil
}

// ListDLQ returns the dead letters matching f (oldest first per partition).
func (p *Processor) ListDLQ(ctx context.Context, f DLQFilter) ([]DeadLetterEntry, error) {
	var out []DeadLetterEntry
	err := p.scanDLQ(ctx, f, func(e *DeadLetterEntry) bool {
		out = append(out, *e)
		return f.Limit <= 0 || len(out) < f.Limit
	})
	return out, err
}

// ErrNotReplayable marks dead letters that carry no delivery (malformed input).
var ErrNotReplayable = errors.New("not a delivery")

// ReplayDLQ puts every matching dead letter of a delivery back on the first
// retry topic, due now, with its original webhook-id and exact payload. The
// attempt count goes on from where it stopped; a replayed delivery gets the
// full retry schedule again. Malformed inputs (no delivery id) are skipped.
func (p *Processor) ReplayDLQ(ctx context.Context, f DLQFilter, prod *kgo.Client) (int, error) {
	if p.wh.Retry.MaxAttempts < 2 {
		return 0, errors.New("replay needs retry topics: partner.webhooks.retry.max_attempts is 1")
	}
	var recs []*kgo.Record
	now := time.Now().UTC()
	err := p.scanDLQ(ctx, f, func(e *DeadLetterEntry) bool {
		if e.DeliveryID == "" || e.EndpointID == "" || len(e.Payload) == 0 {
			return true
		}
		t := Task{SchemaVersion: schemas.SchemaVersion, DeliveryID: e.DeliveryID, TenantID: e.TenantID,
			EndpointID: e.EndpointID, EventID: e.EventID, EventType: e.EventType, Stage: 1, Attempts: e.Attempts,
			NotBefore: now, FirstAttemptAt: e.FirstAttemptAt, LastAttemptAt: e.LastAttemptAt, LastStatus: e.LastStatus,
			LastError: e.LastError, TraceID: e.TraceID, Replayed: true, Body: []byte(e.Payload)}
		r := p.record(ctx, p.names.Retry(1), t.DeliveryID, t)
		kafka.SetHeader(r, "replayed-from", fmt.Sprintf("%s/%d/%d", p.names.Topic(schemas.TopicDLQ), e.Partition, e.Offset))
		recs = append(recs, r)
		return true
	})
	if err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, fmt.Errorf("replay into %s: %w", p.names.Retry(1), err)
	}
	p.log.Info("DLQ replayed", "records", len(recs), "tenant_id", f.Tenant, "event_type", f.EventType)
	return len(recs), nil
}

// watchDLQ follows the DLQ topic from its start and keeps the per-tenant
// depth gauge. Tenants are few (a bounded label set); malformed inputs count
// under tenant_id "".
func (p *Processor) watchDLQ(ctx context.Context) error {
	topic := p.names.Topic(schemas.TopicDLQ)
	cl, err := p.kafka.NewClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			var dl struct {
				TenantID string `json:"tenant_id"`
			}
			_ = json.Unmarshal(r.Value, &dl)
			p.m.dlqDepth.WithLabelValues(strings.TrimSpace(dl.TenantID)).Inc()
		})
	}
}
