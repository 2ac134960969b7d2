package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// RunDeliveryLog sinks partners.deliveries.v1 into the ClickHouse table
// webhook_deliveries until ctx ends: one batch insert per polled batch, offsets
// committed after the insert (at-least-once; the table and its rollup
// deduplicate by attempt id). Undecodable records are logged and skipped.
func RunDeliveryLog(ctx context.Context, k kafka.Cluster, conn driver.Conn, log *slog.Logger) error {
	log = log.With("component", "delivery-log")
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
	return kafka.Consume(ctx, cl, log, func(ctx context.Context, recs []*kgo.Record) error {
		return InsertAttempts(ctx, conn, recs, log)
	})
}

// InsertAttempts inserts delivery-attempt records in one batch.
func InsertAttempts(ctx context.Context, conn driver.Conn, recs []*kgo.Record, log *slog.Logger) error {
	b, err := conn.PrepareBatch(ctx, chsql.InsertDeliveries.SQL)
	if err != nil {
		return fmt.Errorf("prepare webhook_deliveries batch: %w", err)
	}
	n := 0
	for _, r := range recs {
		a, err := decodeAttempt(r.Value)
		if err != nil {
			log.Warn("undecodable delivery attempt skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		if err := b.Append(a.ID, a.DeliveryID, a.TenantID, a.EndpointID, a.EventID, a.EventType,
			uint16(min(max(a.Attempt, 0), 65535)), uint16(min(max(a.StatusCode, 0), 65535)), a.Outcome, a.LatencyMS,
			a.Error, a.TraceID, a.AttemptedAt.UTC()); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append delivery attempt: %w", err)
		}
		n++
	}
	if n == 0 {
		_ = b.Abort()
		return nil
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d delivery attempts: %w", n, err)
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
