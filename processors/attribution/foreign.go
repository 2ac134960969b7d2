package attribution

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrForeignLedger is returned by Run when the ingest ledger counts more
// records of a partition than the partition holds on the brokers: the
// ClickHouse database was filled from another Kafka cluster, or the topic
// was deleted and created again (offsets restart at 0). Consuming anyway
// would skip every new record below the old end offset as "already
// counted" and ROI would silently miss them.
var ErrForeignLedger = errors.New("the ingest ledger in ClickHouse is ahead of the Kafka topics")

// checkLedgerAgainstLog compares every partition's committed end offset in
// the ledger with the partition's end offset on the brokers. A ledger end
// past the log end cannot come from this topic.
// Brokers that do not answer yet are waited for (as ClickHouse is by
// waitLedger); nil when ctx ends first.
func (p *Processor) checkLedgerAgainstLog(ctx context.Context, cl *kgo.Client) error {
	var ends kadm.ListedOffsets
	for backoff := 100 * time.Millisecond; ; backoff = min(backoff*2, 10*time.Second) {
		var err error
		if ends, err = kadm.NewClient(cl).ListEndOffsets(ctx, p.Topics()...); err == nil {
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
	if len(ahead) == 0 {
		return nil
	}
	slices.Sort(ahead)
	return fmt.Errorf("%w: it counts %s. This database (clickhouse.database) was filled from another Kafka cluster "+
		"or these topics were created again; their records would be skipped as already counted. Use a fresh database "+
		"for these brokers (e.g. PARTNERS_CLICKHOUSE_DB), or restate into one (schemas/clickhouse/README.md, Operations)",
		ErrForeignLedger, strings.Join(ahead, "; "))
}
