package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/processors/webhooks"
	"github.com/partners-engine/partners-engine/schemas"
)

// dlqQueues are the dead-letter topics `partners dlq read` reads, by the
// name its --queue flag takes.
var dlqQueues = map[string]string{
	"attribution": schemas.TopicAttrDLQ,
	"tenants":     schemas.TopicTenantsDLQ,
	"webhooks":    schemas.TopicDLQ,
}

// deadLetterLine is one record of a dead-letter topic as `partners dlq read
// --format json` prints it: where it sits in the DLQ, and the dead letter
// (the record's value unchanged; undecodable values as text).
type deadLetterLine struct {
	Queue      string          `json:"queue"`
	Partition  int32           `json:"dlq_partition"`
	Offset     int64           `json:"dlq_offset"`
	At         time.Time       `json:"dlq_timestamp"`
	DeadLetter json.RawMessage `json:"dead_letter,omitempty"`
	Undecoded  string          `json:"undecodable_value,omitempty"`

	dl schemas.DeadLetter
}

func (a *app) dlqReadCmd() *cobra.Command {
	var queue, since, reason, format string
	var limit int
	cmd := &cobra.Command{
		Use:   "read --queue attribution|tenants|webhooks [--since 24h] [--reason CODE] [--limit N] [--format table|json]",
		Short: "Read a dead-letter topic straight from Kafka, newest first (the attribution and tenants DLQs have no index)",
		Long: `read consumes a dead-letter topic from kafka.brokers (or the embedded broker
of a running 'partners dev') without joining a consumer group, so it moves no
offsets and changes nothing. Each line is one dead letter: when it was
written, the record it stands for (source topic/partition@offset), the reason
code (malformed_record, oversized_record, unwritable_record, …), the
original record's size and the reason in words. --format json prints every
dead letter whole (with its payload or raw bytes, truncated as stored).

The attribution DLQ holds touchpoints, conversions and costs the processor
could not use; the tenants DLQ undecodable tenant records; the webhooks DLQ
failed deliveries (for those, 'partners dlq list' and 'replay' work through
the admin API's index).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, ok := dlqQueues[queue]
			if !ok {
				return &exitError{code: exitUsage, err: fmt.Errorf("--queue: want attribution, tenants or webhooks, got %q", queue)}
			}
			if format != "table" && format != "json" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--format: want table or json, got %q", format)}
			}
			if limit < 1 || limit > 10_000 {
				return &exitError{code: exitUsage, err: fmt.Errorf("--limit: must be between 1 and 10000, got %d", limit)}
			}
			from, err := webhooks.ParseSince(since, time.Now())
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("--since: %w", err)}
			}
			cfg, err := a.loadClient()
			if err != nil {
				return err
			}
			brokers := cfg.Kafka.Brokers
			if len(brokers) == 0 {
				brokers = []string{fmt.Sprintf("127.0.0.1:%d", cfg.Kafka.EmbeddedPort)}
			}
			topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(base)
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			lines, err := readDeadLetters(ctx, func(opts ...kgo.Opt) (*kgo.Client, error) {
				return kafka.NewClient(cfg.Kafka, brokers, a.logger(cfg), opts...)
			}, topic, from, reason, limit)
			if err != nil {
				return fmt.Errorf("read %s on %v (is Kafka or 'partners dev' running?): %w", topic, brokers, err)
			}
			for i := range lines {
				lines[i].Queue = queue
			}
			if format == "json" {
				if lines == nil {
					lines = []deadLetterLine{}
				}
				b, err := json.MarshalIndent(lines, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, string(b))
				return nil
			}
			if len(lines) == 0 {
				if from.IsZero() {
					fmt.Fprintf(a.stdout, "no dead letters in %s\n", topic)
				} else {
					fmt.Fprintf(a.stdout, "no dead letters in %s since %s\n", topic, from.UTC().Format(time.RFC3339))
				}
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tSOURCE\tCODE\tBYTES\tREASON")
			for _, l := range lines {
				src, code, size, why := "-", "-", "-", "(not a dead letter: "+quoteShort(l.Undecoded)+")"
				if l.DeadLetter != nil {
					d := l.dl
					if d.SourceTopic != "" {
						src = d.SourceTopic
						if d.SourcePartition != nil && d.SourceOffset != nil {
							src += fmt.Sprintf("/%d@%d", *d.SourcePartition, *d.SourceOffset)
						}
					}
					if d.ReasonCode != "" {
						code = d.ReasonCode
					}
					if d.PayloadBytes > 0 {
						size = strconv.Itoa(d.PayloadBytes)
					} else if len(d.Raw) > 0 && !d.Truncated {
						size = strconv.Itoa(len(d.Raw))
					}
					why = oneLine(d.Reason, 120)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.At.UTC().Format(time.RFC3339), src, code, size, why)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&queue, "queue", "attribution", "attribution, tenants or webhooks")
	cmd.Flags().StringVar(&since, "since", "", "only dead letters written since an RFC 3339 time or a duration ago (24h)")
	cmd.Flags().StringVar(&reason, "reason", "", "only this reason code (malformed_record, oversized_record, unwritable_record, …)")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many, the newest")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

// readDeadLetters reads topic from every partition's first offset at or
// after from (the start without from) to its end as of the call, and returns
// the newest limit records whose reason code is reason (any without),
// newest first.
func readDeadLetters(ctx context.Context, newClient func(...kgo.Opt) (*kgo.Client, error), topic string, from time.Time, reason string, limit int) ([]deadLetterLine, error) {
	cl, err := newClient()
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		cl.Close()
		return nil, err
	}
	if _, ok := ends[topic]; !ok {
		cl.Close()
		return nil, fmt.Errorf("topic %s does not exist", topic)
	}
	var starts kadm.ListedOffsets
	if from.IsZero() {
		starts, err = adm.ListStartOffsets(ctx, topic)
	} else {
		starts, err = adm.ListOffsetsAfterMilli(ctx, from.UnixMilli(), topic)
	}
	if err == nil {
		err = starts.Error()
	}
	cl.Close()
	if err != nil {
		return nil, err
	}
	offsets := map[int32]kgo.Offset{}
	want := map[int32]int64{} // partition → end offset still to reach
	ends.Each(func(o kadm.ListedOffset) {
		s, ok := starts.Lookup(topic, o.Partition)
		if !ok || s.Offset >= o.Offset || s.Offset < 0 {
			return
		}
		offsets[o.Partition] = kgo.NewOffset().At(s.Offset)
		want[o.Partition] = o.Offset
	})
	if len(want) == 0 {
		return nil, nil
	}
	cl, err = newClient(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []deadLetterLine
	for len(want) > 0 {
		// A partition's last offsets may hold no record a consumer sees
		// (transaction markers, compacted-away keys): a poll that brings
		// nothing for idleAfter ends the read.
		pctx, pcancel := context.WithTimeout(ctx, idleAfter)
		fs := cl.PollFetches(pctx)
		pcancel()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w (%d partitions not read to their end)", err, len(want))
		}
		if fs.NumRecords() == 0 && pctx.Err() != nil {
			break
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = err
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
			l := deadLetterLine{Partition: r.Partition, Offset: r.Offset, At: r.Timestamp}
			if json.Unmarshal(r.Value, &l.dl) == nil && l.dl.Reason != "" {
				l.DeadLetter = json.RawMessage(r.Value)
			} else {
				l.Undecoded = string(r.Value)
			}
			if reason != "" && l.dl.ReasonCode != reason {
				return
			}
			out = append(out, l)
		})
		// A DLQ can hold millions of dead letters of up to
		// dlq_max_payload_bytes each: only the newest limit are kept.
		if len(out) > 2*limit {
			out = newest(out, limit)
		}
	}
	return newest(out, limit), nil
}

// newest sorts dead letters newest first (by timestamp; ties by partition,
// then by offset, the later first) and keeps the first limit.
func newest(out []deadLetterLine, limit int) []deadLetterLine {
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.After(out[j].At)
		}
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset > out[j].Offset
	})
	if len(out) > limit {
		// a copy, so the records dropped are not kept alive by the array
		out = append([]deadLetterLine(nil), out[:limit]...)
	}
	return out
}

// idleAfter ends a dead-letter read when no record arrived for this long
// (the broker answers a fetch at once when it has data).
const idleAfter = 3 * time.Second

// oneLine folds s onto one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
