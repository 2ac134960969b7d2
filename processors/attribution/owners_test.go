package attribution_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
)

// TestTwoOwnersOfAPartition: two workers of one process hold batches of
// the same partition at once — what a rebalance after a lost session (a
// broker restart, a long pause) leaves behind: the old owner is still in
// its batch when the new owner polls the partition again from the last
// committed offset. The old owner's batch stops before its inserts; the new
// owner's batch overlaps it. Whatever order they finish in, every record
// counts once: the rollups and raw tables equal the oracle to the cent, a
// third pass over the same records changes nothing, and the reconciliation
// finds roi_daily equal to the raw tables.
func TestTwoOwnersOfAPartition(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	d := oracleDataset(now, "owners-")
	want := expected(d, e, now, 7, 30, 90)
	recs, err := d.Records(e.names)
	if err != nil {
		t.Fatal(err)
	}
	// One partition per topic, offsets in order, as a poll returns them.
	next := map[string]int64{}
	for _, r := range recs {
		r.Partition, r.Offset, r.Timestamp = 0, next[r.Topic], now
		next[r.Topic]++
	}
	p, err := attribution.New(attribution.Options{Config: e.cfg.Partner.Attribution, Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: e.brokers},
		Conn: e.conn, Producer: e.cl, Log: slog.New(slog.NewJSONHandler(e.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	reached, release := attribution.PauseFirstInsert(p)
	defer release()
	ctx := context.Background()
	old := make(chan error, 1)
	go func() { old <- p.Handle(ctx, recs[:len(recs)/2]) }()
	<-reached
	// The new owner's batch: everything from the start. It may finish
	// first or wait for the old owner; give it the time to finish first.
	cur := make(chan error, 1)
	go func() { cur <- p.Handle(ctx, recs) }()
	var curErr error
	curDone := false
	select {
	case curErr = <-cur:
		curDone = true
	case <-time.After(3 * time.Second):
	}
	release()
	if err := <-old; err != nil {
		t.Fatalf("old owner's batch: %v", err)
	}
	if !curDone {
		curErr = <-cur
	}
	if curErr != nil {
		t.Fatalf("new owner's batch: %v", curErr)
	}
	diff(t, "rollups after two owners", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	diff(t, "raw after two owners", snapshot(t, e, roi.Raw, now, 7, 30, 90), want)
	// Everything is counted: handling the records again changes nothing.
	if err := p.Handle(ctx, recs); err != nil {
		t.Fatal(err)
	}
	diff(t, "rollups after a third pass", snapshot(t, e, roi.Rollups, now, 7, 30, 90), want)
	from, to := roi.Query{Window: 90, AsOf: now}.Range()
	if bad, err := p.Reconcile(ctx, from, to); err != nil || len(bad) != 0 {
		t.Errorf("reconciliation: %v %v", bad, err)
	}
}
