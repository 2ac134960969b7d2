package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/schemas"
)

// WithDeadLetters reports every tenant record that cannot be decoded to
// topic (partners.tenants.dlq, compacted) through producer. A dead letter
// names the record's position, size, SHA-256 and the reason, never its
// content (a tenant record may carry secrets): the record itself stays in
// the tenants topic at that position. Its key is the position and its value
// depends only on the record, so every process and every restart that reads
// the record writes the same entry, and compaction keeps one.
func WithDeadLetters(topic string, producer *kgo.Client) Option {
	return func(r *Registry) { r.dlqTopic, r.dlq = topic, producer }
}

// deadLetterRecord is the dead letter of the undecodable tenant record rec.
func deadLetterRecord(topic string, rec *kgo.Record, reason string) *kgo.Record {
	sum := sha256.Sum256(rec.Value)
	part, off := rec.Partition, rec.Offset
	v, _ := json.Marshal(schemas.DeadLetter{ // cannot fail: strings and numbers
		SchemaVersion:   schemas.SchemaVersion,
		Reason:          schemas.TruncateUTF8(reason, schemas.MaxDeadLetterReasonBytes),
		ReasonCode:      "malformed_record",
		SourceTopic:     rec.Topic,
		SourcePartition: &part,
		SourceOffset:    &off,
		PayloadBytes:    len(rec.Value),
		PayloadSHA256:   hex.EncodeToString(sum[:]),
	})
	return &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "%d/%d", part, off), Value: v}
}

// deadLetter produces the dead letter of rec without waiting: the registry
// must go on reading. A failed produce is logged; the next start reads the
// record again and writes its dead letter again.
func (r *Registry) deadLetter(rec *kgo.Record, reason string) {
	if r.dlq == nil {
		return
	}
	dl := deadLetterRecord(r.dlqTopic, rec, reason)
	r.dlq.Produce(context.Background(), dl, func(_ *kgo.Record, err error) {
		if err != nil {
			r.log.Error("tenant dead letter not produced", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		}
	})
}
