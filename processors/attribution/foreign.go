package attribution

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrForeignLedger is returned by Run when the ingest ledger in ClickHouse
// counts records of other topics than the brokers hold: the database was
// filled from another Kafka cluster, or a topic was deleted and created
// again (offsets restart at 0). It shows as a topic id the ledger did not
// record, or a partition end in the ledger past the partition's end on the
// brokers. Consuming anyway would skip every new record below the old end
// offset as "already counted" and ROI would silently miss them.
var ErrForeignLedger = errors.New("the ingest ledger in ClickHouse counts other Kafka topics than these brokers hold")

// checkLedgerAgainstLog checks that the ledger counts these brokers'
// topics: each source topic's Kafka topic id must be one the ledger
// recorded (when it recorded any), and no partition's committed end offset
// in the ledger may be past the partition's end on the brokers. It also
// keeps the topic ids, which the next rollup inserts record.
// Brokers that do not answer yet are waited for (as ClickHouse is by
// waitLedger); nil when ctx ends first.
func (p *Processor) checkLedgerAgainstLog(ctx context.Context, cl *kgo.Client) error {
	var ends kadm.ListedOffsets
	var details kadm.TopicDetails
	for backoff := 100 * time.Millisecond; ; backoff = min(backoff*2, 10*time.Second) {
		var err error
		adm := kadm.NewClient(cl)
		if ends, err = adm.ListEndOffsets(ctx, p.Topics()...); err == nil {
			details, err = adm.ListTopics(ctx, p.Topics()...)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		p.opt.Log.Warn("attribution: end offsets of the source topics not readable yet; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
	p.topicIDs = map[string]string{}
	var other []string
	for _, topic := range p.Topics() {
		var id string
		if d, ok := details[topic]; ok && d.Err == nil && d.ID != (kadm.TopicID{}) {
			id = hex.EncodeToString(d.ID[:])
		}
		p.topicIDs[topic] = id
		// A ledger from before topic ids were recorded, or brokers without
		// them, only get the offset check below.
		if rec := p.led.recordedTopicIDs(topic); id != "" && len(rec) > 0 && !slices.Contains(rec, id) {
			other = append(other, fmt.Sprintf("%s is not the topic it counted (topic id %s on the brokers, %s in the ledger)", topic, id, strings.Join(rec, ", ")))
		}
	}
	var ahead []string
	for _, topic := range p.Topics() {
		for src, end := range p.led.partitionEnds(topic) {
			var logEnd int64
			if o, ok := ends.Lookup(topic, src); ok && o.Err == nil {
				logEnd = o.Offset
			}
			if end > logEnd {
				ahead = append(ahead, fmt.Sprintf("%s up to offset %d (the partition ends at %d)", srcKey(topic, src), end, logEnd))
			}
		}
	}
	if len(other) == 0 && len(ahead) == 0 {
		return nil
	}
	slices.Sort(ahead)
	var found []string
	if len(other) > 0 {
		found = append(found, strings.Join(other, "; "))
	}
	if len(ahead) > 0 {
		found = append(found, "it counts "+strings.Join(ahead, "; "))
	}
	return fmt.Errorf("%w: %s. This database (clickhouse.database) was filled from another Kafka cluster "+
		"or these topics were created again; their records would be skipped as already counted. Use a fresh database "+
		"for these brokers (e.g. PARTNERS_CLICKHOUSE_DB), or restate into one (schemas/clickhouse/README.md, Operations)",
		ErrForeignLedger, strings.Join(found, "; "))
}
