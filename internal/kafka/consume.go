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

// Consume polls cl until ctx ends, runs h on every batch and commits the
// batch's offsets after h succeeds. It returns nil on ctx cancellation.
func Consume(ctx context.Context, cl *kgo.Client, log *slog.Logger, h Handler) error {
	backoff := 100 * time.Millisecond
	for {
		fetches := cl.PollRecords(ctx, 10_000)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				log.Warn("kafka fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		recs := fetches.Records()
		if len(recs) == 0 {
			cl.AllowRebalance()
			continue
		}
		for {
			err := h(ctx, recs)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				cl.AllowRebalance()
				return nil
			}
			log.Warn("batch failed; retrying it", "records", len(recs), "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
				cl.AllowRebalance()
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
		}
		backoff = 100 * time.Millisecond
		if err := commit(ctx, cl, recs); err != nil {
			log.Warn("offset commit failed; records may be handled again", "err", err)
		}
		cl.AllowRebalance()
	}
}

func commit(ctx context.Context, cl *kgo.Client, recs []*kgo.Record) error {
	// Commit even if ctx was cancelled mid-way: the work is done.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return cl.CommitRecords(cctx, recs...)
}
