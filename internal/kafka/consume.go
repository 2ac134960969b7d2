package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ConsumerOptions are the options of a group consumer whose offsets are
// committed by Consume only after its handler finished. Pass them to
// NewClient together with kgo.ConsumerGroup and kgo.ConsumeTopics.
func ConsumerOptions() []kgo.Opt {
	return []kgo.Opt{
		// Only offsets Consume marked (records whose effects are durable)
		// are ever committed. Consume commits them at once; the client's
		// autocommit commits marks again every CommitRetryInterval, so a
		// commit that failed (the group coordinator's broker was down)
		// still lands when the partition gets no new records. Marks of a
		// partition the member lost are dropped by the client, so a late
		// commit never rewinds the new owner's.
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(CommitRetryInterval),
		// Rebalances wait until the polled batch is handled and committed,
		// or released after a bounded number of retries, so a partition is
		// never handed over with work in flight and a failing batch never
		// holds the group for long.
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10 * time.Second),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}
}

// Handler processes one polled batch. It returns nil only when the effects of
// every record are durable (delivered, produced, inserted, or dead-lettered):
// the batch's offsets are committed right after.
//
// An error is either permanent or retryable. A permanent error
// (Permanent(err, recs...)) says the records it names, or the whole batch
// when it names none, can never be handled: they go to the dead-letter
// function with the error and the rest of the batch is handled again
// without them. Any other error is retryable: nothing of the batch is
// considered done, and the batch is handled again after a backoff.
type Handler func(ctx context.Context, recs []*kgo.Record) error

// PermanentError marks records that can never be handled (poison input).
type PermanentError struct {
	Err     error
	Records []*kgo.Record // nil: the whole batch
}

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a permanent failure of recs (none: of the whole batch).
func Permanent(err error, recs ...*kgo.Record) error {
	return &PermanentError{Err: err, Records: recs}
}

// CommitRetryInterval is how often a group consumer made with
// ConsumerOptions commits marked offsets that are not committed yet.
const CommitRetryInterval = time.Second

// DeadLetterFunc stores records that can never be handled, with the reason,
// and returns nil once they are durable (a DLQ topic, a table).
type DeadLetterFunc func(ctx context.Context, recs []*kgo.Record, reason error) error

// Batching gathers records across polls into one handler call.
type Batching struct {
	// Size is the most records one call gets (0: 10,000).
	Size int
	// Linger is how long after the first record of a batch Consume waits
	// for more before calling the handler (0: one poll is one batch).
	Linger time.Duration
	// MaxBytes stops the gathering once the batch's keys and values hold
	// this many bytes (0: no limit), so a run of large records cannot make
	// a batch of Size of them in memory. A batch may exceed it by the
	// records of the poll that crossed it.
	MaxBytes int
}

// ConsumeOptions configure ConsumeWith.
type ConsumeOptions struct {
	Batching
	// HeldRetries is how many times a retryable failure is retried while
	// the batch holds its partitions (a rebalance waits meanwhile), with
	// backoff from 100 ms (0: 3, about 0.7 s in all). After that the batch
	// is released: its partitions are rewound to the batch's first offsets
	// and may move to another member, and what is still assigned is polled
	// and handled again after a backoff that doubles up to MaxBackoff. A
	// retryable failure is therefore retried for as long as it lasts (a
	// ClickHouse outage delays, never loses) but never blocks a rebalance
	// for more than about a second.
	HeldRetries int
	// MaxBackoff caps the backoff between released retries (0: 10 s).
	MaxBackoff time.Duration
	// DeadLetter receives records failing permanently. nil: they are
	// logged (topic, partition, offset, reason; never their content) and
	// skipped.
	DeadLetter DeadLetterFunc
}

// Consume polls cl until ctx ends, runs h on every polled batch and commits
// the batch's offsets after h succeeds. It returns nil on ctx cancellation.
func Consume(ctx context.Context, cl *kgo.Client, log *slog.Logger, h Handler) error {
	return ConsumeWith(ctx, cl, log, ConsumeOptions{}, h)
}

// ConsumeBatches is Consume gathering batches of up to b.Size records or
// b.Linger after the first one, with the default retry contract of
// ConsumeWith.
func ConsumeBatches(ctx context.Context, cl *kgo.Client, log *slog.Logger, b Batching, h Handler) error {
	return ConsumeWith(ctx, cl, log, ConsumeOptions{Batching: b}, h)
}

// ConsumeWith polls cl (a group consumer made with ConsumerOptions) until
// ctx ends and hands batches to h under the contract of Handler and
// ConsumeOptions. A batch gathered when ctx ends gets one bounded attempt,
// so a clean stop does not leave work for the next start.
func ConsumeWith(ctx context.Context, cl *kgo.Client, log *slog.Logger, opt ConsumeOptions, h Handler) error {
	size := opt.Size
	if size <= 0 {
		size = 10_000
	}
	held := opt.HeldRetries
	if held <= 0 {
		held = 3
	}
	maxBackoff := opt.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 10 * time.Second
	}
	c := &consumer{cl: cl, log: log, h: h, dead: opt.DeadLetter}
	var pending []*kgo.Record
	var first time.Time
	pendingBytes := 0
	released := 0 // consecutive releases of a failing batch
	for {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if len(pending) > 0 {
			pctx, cancel = context.WithDeadline(ctx, first.Add(opt.Linger))
		}
		fetches := cl.PollRecords(pctx, size-len(pending))
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		if ctx.Err() != nil {
			c.finalFlush(ctx, pending)
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				log.Warn("kafka fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		recs := fetches.Records()
		if len(recs) > 0 && len(pending) == 0 {
			first = time.Now()
		}
		pending = append(pending, recs...)
		for _, r := range recs {
			pendingBytes += len(r.Key) + len(r.Value)
		}
		if len(pending) == 0 {
			cl.AllowRebalance()
			continue
		}
		full := len(pending) >= size || opt.MaxBytes > 0 && pendingBytes >= opt.MaxBytes
		if !full && time.Now().Before(first.Add(opt.Linger)) {
			continue
		}
		switch c.handle(ctx, pending, held) {
		case handled:
			c.commit(ctx, pending)
			released = 0
			pending, pendingBytes = nil, 0
			cl.AllowRebalance()
		case stopped:
			cl.AllowRebalance()
			return nil
		case failing:
			// Release the partitions: rewind them so the batch is polled
			// again, let a rebalance through, wait, and start over.
			c.rewind(pending)
			pending, pendingBytes = nil, 0
			cl.AllowRebalance()
			backoff := min(time.Second<<min(released, 10), maxBackoff)
			released++
			log.Warn("batch still failing; released its partitions and will poll it again", "backoff", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
	}
}

type consumer struct {
	cl   *kgo.Client
	log  *slog.Logger
	h    Handler
	dead DeadLetterFunc
}

type result int

const (
	handled result = iota
	stopped        // ctx ended
	failing        // retryable failure after the held retries
)

// handle runs h on recs, dead-lettering what fails permanently, retrying a
// retryable failure up to held times.
func (c *consumer) handle(ctx context.Context, recs []*kgo.Record, held int) result {
	backoff := 100 * time.Millisecond
	tries := 0
	for len(recs) > 0 {
		err := c.h(ctx, recs)
		if err == nil {
			return handled
		}
		if ctx.Err() != nil {
			return stopped
		}
		var pe *PermanentError
		if errors.As(err, &pe) {
			poison := pe.Records
			if len(poison) == 0 {
				poison = recs
			}
			if derr := c.deadLetter(ctx, poison, pe.Err); derr != nil {
				err = fmt.Errorf("dead-lettering %d records: %w", len(poison), derr)
			} else {
				recs = without(recs, poison)
				continue // the rest is handled again at once
			}
		}
		tries++
		if tries > held {
			return failing
		}
		c.log.Warn("batch failed; retrying it (offsets not committed)", "records", len(recs), "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return stopped
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return handled
}

func (c *consumer) deadLetter(ctx context.Context, recs []*kgo.Record, reason error) error {
	if c.dead != nil {
		return c.dead(ctx, recs, reason)
	}
	for _, r := range recs {
		c.log.Warn("record cannot be handled; skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "reason", reason)
	}
	return nil
}

func without(recs, drop []*kgo.Record) []*kgo.Record {
	skip := make(map[*kgo.Record]bool, len(drop))
	for _, r := range drop {
		skip[r] = true
	}
	out := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		if !skip[r] {
			out = append(out, r)
		}
	}
	return out
}

// rewind sets each partition of recs back to its first record in recs, so
// the next poll returns them again. Called before AllowRebalance, as
// SetOffsets requires.
func (c *consumer) rewind(recs []*kgo.Record) {
	c.cl.SetOffsets(edges(recs, true))
}

// finalFlush gives a batch gathered before shutdown one bounded attempt;
// whatever fails is not committed and is handled again after a restart.
func (c *consumer) finalFlush(ctx context.Context, pending []*kgo.Record) {
	defer c.cl.AllowRebalance()
	if len(pending) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if c.handle(fctx, pending, 0) != handled {
		c.log.Warn("final batch not handled; it will be handled again after a restart", "records", len(pending))
		return
	}
	c.commit(fctx, pending)
}

// commit marks recs done and commits the marks even if ctx was cancelled:
// the work is done. A failed commit is retried by the client's autocommit
// (ConsumerOptions); until it lands, a restart handles the records again.
func (c *consumer) commit(ctx context.Context, recs []*kgo.Record) {
	c.cl.MarkCommitOffsets(edges(recs, false))
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.cl.CommitMarkedOffsets(cctx); err != nil {
		c.log.Warn("offset commit failed; retried every "+CommitRetryInterval.String()+" (until it lands, a restart handles the records again)", "err", err)
	}
}

// edges is, per partition of recs, the position of its first record in
// recs (first) or the position after its last one.
func edges(recs []*kgo.Record, first bool) map[string]map[int32]kgo.EpochOffset {
	out := map[string]map[int32]kgo.EpochOffset{}
	for _, r := range recs {
		ps := out[r.Topic]
		if ps == nil {
			ps = map[int32]kgo.EpochOffset{}
			out[r.Topic] = ps
		}
		at := kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
		if !first {
			at.Offset++
		}
		if cur, ok := ps[r.Partition]; !ok || first && at.Offset < cur.Offset || !first && at.Offset > cur.Offset {
			ps[r.Partition] = at
		}
	}
	return out
}
