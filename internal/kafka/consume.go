package kafka

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ConsumerOptions are the options of a group consumer whose offsets are
// committed by Consume only after its handler finished. Pass them to
// NewClient together with kgo.ConsumerGroup and kgo.ConsumeTopics.
func ConsumerOptions() []kgo.Opt {
	return []kgo.Opt{
		kgo.DisableAutoCommit(),
		// Rebalances wait until the polled batch is handled and committed,
		// so a partition is never handed over with work in flight.
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10 * time.Second),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}
}

// Handler processes one polled batch. It returns nil only when the effects of
// every record are durable (delivered, produced, inserted, or dead-lettered):
// the batch's offsets are committed right after. A non-nil error means
// "nothing here is done": the batch is handled again after a backoff.
type Handler func(ctx context.Context, recs []*kgo.Record) error

// Batching gathers records across polls into one handler call.
type Batching struct {
	// Size is the most records one call gets (0: 10,000).
	Size int
	// Linger is how long after the first record of a batch Consume waits
	// for more before calling the handler (0: one poll is one batch).
	Linger time.Duration
}

// Consume polls cl until ctx ends, runs h on every polled batch and commits
// the batch's offsets after h succeeds. It returns nil on ctx cancellation.
func Consume(ctx context.Context, cl *kgo.Client, log *slog.Logger, h Handler) error {
	return ConsumeBatches(ctx, cl, log, Batching{}, h)
}

// ConsumeBatches is Consume gathering batches of up to b.Size records or
// b.Linger after the first one. A failing batch is handled again with
// backoff (100 ms doubling to 10 s) until it succeeds or ctx ends; nothing is
// committed meanwhile. A batch gathered when ctx ends gets one bounded
// attempt, so a clean stop does not leave work for the next start.
func ConsumeBatches(ctx context.Context, cl *kgo.Client, log *slog.Logger, b Batching, h Handler) error {
	size := b.Size
	if size <= 0 {
		size = 10_000
	}
	var pending []*kgo.Record
	var first time.Time
	for {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if len(pending) > 0 {
			pctx, cancel = context.WithDeadline(ctx, first.Add(b.Linger))
		}
		fetches := cl.PollRecords(pctx, size-len(pending))
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		if ctx.Err() != nil {
			finalFlush(ctx, cl, log, h, pending)
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
		if len(pending) == 0 {
			cl.AllowRebalance()
			continue
		}
		if len(pending) < size && time.Now().Before(first.Add(b.Linger)) {
			continue
		}
		if !handleRetrying(ctx, log, h, pending) {
			cl.AllowRebalance()
			return nil
		}
		commit(ctx, cl, log, pending)
		pending = nil
		cl.AllowRebalance()
	}
}

// handleRetrying runs h until it succeeds (true) or ctx ends (false).
func handleRetrying(ctx context.Context, log *slog.Logger, h Handler, recs []*kgo.Record) bool {
	backoff := 100 * time.Millisecond
	for {
		err := h(ctx, recs)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		log.Warn("batch failed; retrying it (offsets not committed)", "records", len(recs), "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// finalFlush gives a batch gathered before shutdown one bounded attempt;
// whatever fails is not committed and is handled again after a restart.
func finalFlush(ctx context.Context, cl *kgo.Client, log *slog.Logger, h Handler, pending []*kgo.Record) {
	defer cl.AllowRebalance()
	if len(pending) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := h(fctx, pending); err != nil {
		log.Warn("final batch not handled; it will be handled again after a restart", "records", len(pending), "err", err)
		return
	}
	commit(fctx, cl, log, pending)
}

// commit commits recs' offsets even if ctx was cancelled: the work is done.
func commit(ctx context.Context, cl *kgo.Client, log *slog.Logger, recs []*kgo.Record) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := cl.CommitRecords(cctx, recs...); err != nil {
		log.Warn("offset commit failed; records may be handled again", "err", err)
	}
}
