package attribution

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/schemas"
)

// Limits of what a dead letter copies from the record it reports, so that
// it always fits a Kafka record whatever the record was: the payload up to
// partner.attribution.dlq_max_payload_bytes (then truncated, with the
// original's size and SHA-256), the key and the reason up to
// schemas.MaxDeadLetterKeyBytes and MaxDeadLetterReasonBytes, the headers
// up to this.
const (
	maxDeadKeyBytes     = schemas.MaxDeadLetterKeyBytes
	maxDeadReasonBytes  = schemas.MaxDeadLetterReasonBytes
	maxDeadHeadersBytes = 8 << 10
)

// deadLetterOf is the dead letter of rec: the record itself when it is
// small enough (payload when JSON, raw otherwise), else its first max bytes
// as raw with truncated set; always its size, SHA-256 and position.
func deadLetterOf(rec *kgo.Record, code, reason string, max int) schemas.DeadLetter {
	sum := sha256.Sum256(rec.Value)
	part, off := rec.Partition, rec.Offset
	dl := schemas.DeadLetter{
		SchemaVersion:   schemas.SchemaVersion,
		Reason:          schemas.TruncateUTF8(reason, maxDeadReasonBytes),
		ReasonCode:      code,
		SourceTopic:     rec.Topic,
		SourcePartition: &part,
		SourceOffset:    &off,
		PayloadSHA256:   hex.EncodeToString(sum[:]),
		PayloadBytes:    len(rec.Value),
	}
	switch {
	case len(rec.Value) > max:
		dl.Raw, dl.Truncated = rec.Value[:max], true
	case json.Valid(rec.Value):
		dl.Payload = json.RawMessage(rec.Value)
	default:
		dl.Raw = rec.Value
	}
	if dl.Reason == "" {
		dl.Reason = "invalid record"
	}
	return dl
}

// deadLetterRecord is the Kafka record of a dead letter for rec.
func deadLetterRecord(topic string, d dead, max int) (*kgo.Record, error) {
	rec := d.rec
	v, err := json.Marshal(deadLetterOf(rec, d.code, d.reason, max))
	if err != nil {
		return nil, err
	}
	key := rec.Key
	if len(key) > maxDeadKeyBytes {
		key = key[:maxDeadKeyBytes]
	}
	size := 0
	for _, h := range rec.Headers {
		size += len(h.Key) + len(h.Value)
	}
	var headers []kgo.RecordHeader
	if size <= maxDeadHeadersBytes {
		headers = rec.Headers
	}
	return &kgo.Record{Topic: topic, Key: key, Value: v, Headers: headers}, nil
}

// deadLetter produces the batch's undecodable or invalid records to the
// attribution DLQ and waits for the broker's acknowledgement.
func (p *Processor) deadLetter(ctx context.Context, ds []dead) error {
	if len(ds) == 0 {
		return nil
	}
	topic := p.names.Topic(schemas.TopicAttrDLQ)
	recs := make([]*kgo.Record, 0, len(ds))
	for _, d := range ds {
		out, err := deadLetterRecord(topic, d, p.opt.Config.DLQMaxPayloadBytes)
		if err != nil {
			return err
		}
		recs = append(recs, out)
		p.opt.Log.Warn("attribution record dead-lettered", "topic", d.rec.Topic, "partition", d.rec.Partition,
			"offset", d.rec.Offset, "bytes", len(d.rec.Value), "reason_code", d.code, "reason", schemas.TruncateUTF8(d.reason, maxDeadReasonBytes))
	}
	if err := p.opt.Producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce dead letters: %w", err)
	}
	return nil
}
