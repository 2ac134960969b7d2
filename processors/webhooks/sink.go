package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// DeliveryLogOptions configure RunDeliveryLog.
type DeliveryLogOptions struct {
	Kafka  kafka.Cluster   // brokers, topic names, client settings
	Conn   driver.Conn     // the database holding webhook_deliveries
	Config config.Webhooks // the partner.webhooks section (the DLQ switch)
	Log    *slog.Logger
}

// RunDeliveryLog sinks partners.deliveries.v1 into the ClickHouse table
// webhook_deliveries until ctx ends: one batch insert per polled batch, offsets
// committed after the insert (at-least-once; the table and its rollup
// deduplicate by attempt id). A record that is not a delivery attempt is
// dead-lettered (reason malformed_record, its bytes kept) before the batch
// is inserted, so it is listed by `partners dlq list` and never holds back
// the records behind it.
func RunDeliveryLog(ctx context.Context, o DeliveryLogOptions) error {
	log := o.Log.With("component", "delivery-log")
	k := o.Kafka
	if k.Log == nil {
		k.Log = log
	}
	opts := append(kafka.ConsumerOptions(),
		kgo.ConsumerGroup(k.Group("delivery-log")),
		kgo.ConsumeTopics(k.Topic(schemas.TopicDeliveries)))
	cl, err := k.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	dead := func(ctx context.Context, recs []*kgo.Record, reason error) error {
		return deadLetterAttempts(ctx, cl, k.Names(), o.Config, recs, reason, log)
	}
	return kafka.ConsumeWith(ctx, cl, log, kafka.ConsumeOptions{DeadLetter: dead}, func(ctx context.Context, recs []*kgo.Record) error {
		attempts := make([]schemas.DeliveryAttempt, 0, len(recs))
		var bad []*kgo.Record
		for _, r := range recs {
			a, err := decodeAttempt(r.Value)
			if err != nil {
				bad = append(bad, r)
				continue
			}
			attempts = append(attempts, a)
		}
		if len(bad) > 0 {
			// The consumer dead-letters them and hands back the rest.
			return kafka.Permanent(errors.New("not a delivery attempt"), bad...)
		}
		return insertAttempts(ctx, o.Conn, attempts)
	})
}

// deadLetterAttempts produces the dead letters of records that are not
// delivery attempts, each with why it does not decode (else reason), and
// waits until they are durable.
func deadLetterAttempts(ctx context.Context, cl *kgo.Client, names kafka.Names, wh config.Webhooks, bad []*kgo.Record, reason error, log *slog.Logger) error {
	var recs []*kgo.Record
	for _, r := range bad {
		_, err := decodeAttempt(r.Value)
		if err == nil {
			err = reason
		}
		if !wh.DLQ.Enabled {
			log.Warn("DLQ disabled: dropping undecodable delivery attempt", "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		log.Warn("dead-lettering undecodable delivery attempt", "partition", r.Partition, "offset", r.Offset, "err", err)
		key, dl := inputDeadLetter(r, ReasonMalformedRecord, "not a delivery attempt: "+err.Error(), wh.MaxRecordBytes-16<<10)
		recs = append(recs, deadLetterPair(ctx, log, names, key, string(r.Key), dl)...)
	}
	if len(recs) == 0 {
		return nil
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("dead-letter %d undecodable delivery attempts: %w", len(bad), err)
	}
	return nil
}

// insertAttempts inserts delivery attempts in one batch.
func insertAttempts(ctx context.Context, conn driver.Conn, attempts []schemas.DeliveryAttempt) error {
	if len(attempts) == 0 {
		return nil
	}
	b, err := conn.PrepareBatch(ctx, chsql.InsertDeliveries.SQL)
	if err != nil {
		return fmt.Errorf("prepare webhook_deliveries batch: %w", err)
	}
	for _, a := range attempts {
		if err := b.Append(a.ID, a.DeliveryID, a.TenantID, a.EndpointID, a.EventID, a.EventType,
			uint16(min(max(a.Attempt, 0), 65535)), uint16(min(max(a.StatusCode, 0), 65535)), a.Outcome, a.LatencyMS,
			a.Error, a.Reason, a.TraceID, a.AttemptedAt.UTC()); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append delivery attempt: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d delivery attempts: %w", len(attempts), err)
	}
	return nil
}

// decodeAttempt decodes a record of partners.deliveries.v1; it never panics.
func decodeAttempt(b []byte) (schemas.DeliveryAttempt, error) {
	var a schemas.DeliveryAttempt
	if err := json.Unmarshal(b, &a); err != nil {
		return a, err
	}
	if a.ID == "" {
		return a, errors.New("delivery attempt without id")
	}
	return a, nil
}
