package attribution

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// The ingest ledger lives in roi_daily itself, in the same INSERT as the
// corrections it certifies (schemas/clickhouse/README.md, "Exactly once into
// the rollup"): per source partition "topic/partition", the increments of
// its committed end offset, which SummingMergeTree sums. A record at offset
// o of partition P has its effects in the rollup iff o < end(P).
//
// The ledger is authoritative only when no rollup INSERT whose outcome the
// reader did not see is still running: a write the client lost track of
// (a timeout, a dropped connection, a kill -9 of the processor) may still
// commit on the server. Every rollup INSERT runs under a query id with the
// prefix rollupQueryPrefix; load first waits until every such query that is
// running when it starts has finished (system.processes), then reads.

// rollupQueryPrefix starts the query id of every rollup INSERT.
const rollupQueryPrefix = "partners-attribution-rollup-"

// paramsSrc is the src of the row naming the model parameters the rollup
// was built with.
const paramsSrc = "#params"

// topicSrc is the src of a row naming a source topic by its Kafka topic id
// (partner_id "topic=id", the id in hex; Kafka topic names have no '='):
// the ledger's offsets count records of that topic,
// not of another one of the same name (another cluster, or the topic
// deleted and created again).
const topicSrc = "#topic"

// fenceTimeout bounds the wait for running rollup inserts.
const fenceTimeout = 2 * time.Minute

// ErrParamsChanged is returned (wrapped) when the configured model
// parameters differ from those the rollup was built with: corrections are
// differences of the old and new split, so they are only right under the
// parameters that computed the old one.
var ErrParamsChanged = errors.New("attribution model parameters differ from the rollup's")

type ledger struct {
	conn   driver.Conn
	params string // this processor's parameters, e.g. "lookback=720h0m0s half_life=168h0m0s split=2"
	prefix string // rollupQueryPrefix + a per-process id
	seq    atomic.Uint64

	mu       sync.Mutex
	ends     map[string]int64    // "topic/partition" → committed end offset
	recorded []string            // parameters recorded in the rollup
	topicIDs map[string][]string // topic → the Kafka topic ids recorded for it
	stale    bool                // reload before the next use
}

func newLedger(conn driver.Conn, params string) *ledger {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &ledger{conn: conn, params: params, prefix: rollupQueryPrefix + hex.EncodeToString(b[:]) + "-", ends: map[string]int64{}, stale: true}
}

// invalidate makes the next ready reload the ledger: after a rebalance
// (another member may have advanced it) or an insert whose outcome is
// unknown.
func (l *ledger) invalidate() {
	l.mu.Lock()
	l.stale = true
	l.mu.Unlock()
}

// ready loads the ledger if it is stale.
func (l *ledger) ready(ctx context.Context) error {
	l.mu.Lock()
	stale := l.stale
	l.mu.Unlock()
	if !stale {
		return nil
	}
	return l.load(ctx)
}

// load waits for the rollup inserts running now to finish, then reads every
// partition's committed end offset and the recorded parameters. It returns
// an ErrParamsChanged error when the rollup was built with other parameters.
func (l *ledger) load(ctx context.Context) error {
	if err := l.fence(ctx); err != nil {
		return err
	}
	ends, recorded, ids, err := readLedger(ctx, l.conn)
	if err != nil {
		return err
	}
	for _, r := range recorded {
		if r != l.params {
			return fmt.Errorf("%w: the rollup in this database was built with %q, the configuration says %q "+
				"(partner.attribution.lookback_days, time_decay_half_life_days): restore them, or restate "+
				"into a fresh database (schemas/clickhouse/README.md, Operations)", ErrParamsChanged, r, l.params)
		}
	}
	l.mu.Lock()
	// A batch of another partition may have advanced its end after the
	// read above (the workers share the ledger): an end only grows, so the
	// larger of the two is the current one.
	for k, v := range l.ends {
		ends[k] = max(ends[k], v)
	}
	l.ends, l.recorded, l.topicIDs, l.stale = ends, recorded, ids, false
	l.mu.Unlock()
	return nil
}

// readLedger reads every source partition's committed end offset, the
// recorded parameters and the recorded topic ids.
func readLedger(ctx context.Context, conn driver.Conn) (map[string]int64, []string, map[string][]string, error) {
	rows, err := conn.Query(ctx, chsql.LedgerState.SQL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read the ingest ledger: %w", err)
	}
	defer rows.Close()
	ends := map[string]int64{}
	ids := map[string][]string{}
	var recorded []string
	for rows.Next() {
		var src, key string
		var sum int64
		if err := rows.Scan(&src, &key, &sum); err != nil {
			return nil, nil, nil, fmt.Errorf("read the ingest ledger: %w", err)
		}
		switch {
		case src == paramsSrc:
			recorded = append(recorded, key)
		case src == topicSrc:
			if i := strings.IndexByte(key, '='); i > 0 {
				ids[key[:i]] = append(ids[key[:i]], key[i+1:])
			}
		case key == "":
			ends[src] = sum
		}
	}
	slices.Sort(recorded)
	for _, v := range ids {
		slices.Sort(v)
	}
	return ends, recorded, ids, rows.Err()
}

// fence waits until no rollup INSERT that is running now (of any processor)
// still runs.
func (l *ledger) fence(ctx context.Context) error {
	running, err := runningInserts(ctx, l.conn)
	if err != nil || len(running) == 0 {
		return err
	}
	deadline := time.Now().Add(fenceTimeout)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		now, err := runningInserts(ctx, l.conn)
		if err != nil {
			return err
		}
		left := false
		for id := range running {
			if now[id] {
				left = true
			}
		}
		if !left {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rollup inserts still running after %v: %v", fenceTimeout, sortedKeys(running))
		}
	}
}

func runningInserts(ctx context.Context, conn driver.Conn) (map[string]bool, error) {
	var n uint64
	var ids []string
	if err := conn.QueryRow(ctx, chsql.RunningInserts.SQL, rollupQueryPrefix).Scan(&n, &ids); err != nil {
		return nil, fmt.Errorf("list running rollup inserts: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// end is the committed end offset of a partition: its records below it are
// in the rollup.
func (l *ledger) end(topic string, partition int32) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ends[srcKey(topic, partition)]
}

// partitionEnds are the committed end offsets of topic's partitions that
// the ledger holds.
func (l *ledger) partitionEnds(topic string) map[int32]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int32]int64{}
	for src, end := range l.ends {
		t, part, ok := strings.Cut(src, "/")
		if !ok || t != topic {
			continue
		}
		if n, err := strconv.ParseInt(part, 10, 32); err == nil {
			out[int32(n)] = end
		}
	}
	return out
}

// needsParams reports whether this processor's parameters are not recorded
// yet (the next rollup insert records them).
func (l *ledger) needsParams() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !slices.Contains(l.recorded, l.params)
}

// recordedTopicIDs are the topic ids the ledger recorded for topic.
func (l *ledger) recordedTopicIDs(topic string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.topicIDs[topic])
}

// missingTopicIDs are the "topic=id" rows the next rollup insert records:
// the current ids (topic → id) of the batch's source topics the ledger
// does not hold yet, sorted.
func (l *ledger) missingTopicIDs(current map[string]string, ends map[tp]int64) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k := range ends {
		id := current[k.topic]
		row := k.topic + "=" + id
		if id == "" || slices.Contains(l.topicIDs[k.topic], id) || slices.Contains(out, row) {
			continue
		}
		out = append(out, row)
	}
	slices.Sort(out)
	return out
}

// advance records a landed rollup insert: its partitions' new end offsets,
// and the parameters and topic ids it recorded.
func (l *ledger) advance(ends map[tp]int64, params bool, topicIDs []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, v := range ends {
		l.ends[srcKey(k.topic, k.partition)] = v
	}
	if params && !slices.Contains(l.recorded, l.params) {
		l.recorded = append(l.recorded, l.params)
	}
	for _, row := range topicIDs {
		if i := strings.IndexByte(row, '='); i > 0 && !slices.Contains(l.topicIDs[row[:i]], row[i+1:]) {
			if l.topicIDs == nil {
				l.topicIDs = map[string][]string{}
			}
			l.topicIDs[row[:i]] = append(l.topicIDs[row[:i]], row[i+1:])
		}
	}
}

// committedAny reports whether a record with these stored positions
// ("topic/partition@offset", as chsql's history queries return them) is
// counted by the rollup: a position without a source (rows written before
// the ledger, or by SQL) or below its partition's end.
func (l *ledger) committedAny(pos []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range pos {
		at := strings.LastIndexByte(p, '@')
		if at < 0 {
			continue
		}
		src := p[:at]
		if strings.HasPrefix(src, "/") {
			return true // no source position
		}
		off, err := strconv.ParseInt(p[at+1:], 10, 64)
		if err != nil {
			continue
		}
		if off < l.ends[src] {
			return true
		}
	}
	return false
}

// queryID is a fresh query id for a rollup insert.
func (l *ledger) queryID() string {
	return l.prefix + strconv.FormatUint(l.seq.Add(1), 10)
}

func srcKey(topic string, partition int32) string {
	return topic + "/" + strconv.FormatInt(int64(partition), 10)
}
