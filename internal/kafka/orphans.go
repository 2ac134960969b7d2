package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Orphaned transactions.
//
// Kafka can leave a transaction open on a partition after its coordinator
// has finished it: a broker that is SIGKILLed while a commit is being
// prepared reloads the transaction on restart, and if the controller fences
// the broker's previous registration while the markers are pending, the
// coordinator finds no leader endpoint for the transaction's partitions,
// takes them for deleted and drops their markers ("Couldn't find leader
// endpoint for partitions ... these partitions are likely deleted already
// and hence can be skipped"), then completes the transaction. No marker for
// those partitions is ever written: an unclean election loses markers the
// same way (KAFKA-20716). Such a partition is stuck until a marker of the
// same producer lands on it:
//
//   - on __consumer_offsets, the transaction's offset commit stays pending,
//     so every OffsetFetch of the group with RequireStable (franz-go always
//     sets it, KIP-447) answers UNSTABLE_OFFSET_COMMIT, and franz-go retries
//     it every second without bound: the group's consumers never start;
//   - on a data partition, the last stable offset stays at the transaction's
//     first record, so read-committed consumers see nothing after it.
//
// Nothing closes such a partition by itself: a restarted process whose
// group is blocked sat idle, with no error, until an operator ran
// kafka-transactions.sh, and a running one's later transactions (each with
// a new epoch, KIP-890) do not close it either (CI's kafka-single-restart:
// the delivery log's partitions stayed open under a stage that went on
// committing to them). So a stage closes the orphans of its own
// transactional id when it starts, and while it runs (see "Orphans of a
// running stage" below), with the admin API made for this
// (WriteTxnMarkers, KIP-664; it needs the ClusterAction permission):
//
//  1. Before its producer initialises, it describes its transactional id:
//     the state of the last transaction is the coordinator's decision.
//  2. It initialises its producer. InitProducerId fences any other holder
//     of the id and returns only once the coordinator finished an open or
//     preparing transaction of the previous incarnation, so from then on
//     nothing will ever close a transaction of the id's producer that is
//     still open on a partition: that is an orphan. (Looking before this
//     step would race a predecessor that is still running.)
//  3. It closes the orphans the way the coordinator decided: committed when
//     the last transaction was CompleteCommit or PrepareCommit, aborted
//     otherwise (InitProducerId aborts an open one). Committing keeps the
//     transaction atomic when some of its markers did land; aborting hands
//     its records to the stage again from the last committed offsets, as a
//     crash does.
//
// Limit: an incarnation that stops between steps 2 and 3 leaves the next one
// an Empty state, whose orphans are aborted whatever the decision was.
//
// The partitions looked at are the stage's group offsets (every partition
// of __consumer_offsets), its input topics and the topics it produces to
// (TxnStageOptions.Outputs).

const offsetsTopic = "__consumer_offsets"

// lastTxn is what the coordinator knows of a transactional id.
type lastTxn struct {
	known bool
	pid   int64
	state string
}

// describeTxn describes id once. Not found is an Empty id (never used).
func describeTxn(ctx context.Context, adm *kadm.Client, id string) (lastTxn, error) {
	ds, err := adm.DescribeTransactions(ctx, id)
	if err != nil {
		return lastTxn{}, err
	}
	d, ok := ds[id]
	if !ok {
		return lastTxn{}, nil
	}
	if d.Err != nil {
		if errors.Is(d.Err, kerr.TransactionalIDNotFound) {
			return lastTxn{}, nil
		}
		return lastTxn{}, d.Err
	}
	return lastTxn{known: true, pid: d.ProducerID, state: d.State}, nil
}

// retriable is whether err can pass by itself: Kafka down, restarting or
// loading (a network error, a retriable error code). A refusal such as an
// authorization error does not.
func retriable(err error) bool {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable
	}
	return true
}

// settled is whether no transaction of the id is open or being finished.
func (l lastTxn) settled() bool {
	switch l.state {
	case "Empty", "CompleteCommit", "CompleteAbort":
		return true
	}
	return false
}

// commits is whether the coordinator decided to commit the last transaction.
func (l lastTxn) commits() bool { return l.state == "CompleteCommit" || l.state == "PrepareCommit" }

// orphan is a transaction of one of pids still open on a partition.
type orphan struct {
	kadm.DescribedProducer
}

func (o orphan) String() string {
	return fmt.Sprintf("%s/%d (producer %d epoch %d, from offset %d)", o.Topic, o.Partition, o.ProducerID, o.ProducerEpoch, o.CurrentTxnStartOffset)
}

// findOrphans lists the open transactions of pids on the stage's partitions.
// The error says which partitions could not be described (their leader is
// not available yet): the list may then be incomplete.
func (s *TxnStage) findOrphans(ctx context.Context, adm *kadm.Client, pids map[int64]bool) ([]orphan, error) {
	set := kadm.TopicsSet{offsetsTopic: nil}
	for _, t := range append(append([]string{}, s.opt.Topics...), s.opt.Outputs...) {
		set[t] = nil
	}
	dp, err := adm.DescribeProducers(ctx, set)
	if err != nil && len(dp) == 0 {
		return nil, err
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	dp.EachPartition(func(p kadm.DescribedProducersPartition) {
		if p.Err != nil {
			errs = append(errs, fmt.Errorf("%s/%d: %w", p.Topic, p.Partition, p.Err))
		}
	})
	var out []orphan
	for _, d := range dp.SortedProducers() {
		if pids[d.ProducerID] && d.CurrentTxnStartOffset >= 0 {
			out = append(out, orphan{d})
		}
	}
	return out, errors.Join(errs...)
}

// closeOrphans closes the orphans found, committing or aborting them.
func (s *TxnStage) closeOrphans(ctx context.Context, adm *kadm.Client, found []orphan, commit bool) error {
	if len(found) == 0 {
		return nil
	}
	names := make([]string, len(found))
	for i, o := range found {
		names[i] = o.String()
	}
	sort.Strings(names)
	how := "aborting"
	if commit {
		how = "committing"
	}
	s.log.Warn("transactions of this stage's producer were left open by Kafka after their coordinator finished them (lost markers); "+how+" them",
		"transactional_id", s.opt.TransactionalID, "partitions", strings.Join(names, ", "))
	var errs []error
	for _, o := range found {
		res, err := adm.WriteTxnMarkers(ctx, kadm.TxnMarkers{
			ProducerID: o.ProducerID, ProducerEpoch: o.ProducerEpoch, Commit: commit,
			CoordinatorEpoch: max(o.CoordinatorEpoch, 0),
			Topics:           kadm.TopicsSet{o.Topic: {o.Partition: {}}},
		})
		if err == nil {
			res.EachPartition(func(p kadm.TxnMarkersPartitionResponse) {
				if p.Err != nil && err == nil {
					err = p.Err
				}
			})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("stage %s: closing transactions Kafka left open (the group or the read-committed consumers of these partitions stay blocked until they are closed, e.g. with kafka-transactions.sh abort; writing markers needs the ClusterAction permission): %w",
			s.opt.Name, errors.Join(errs...))
	}
	return nil
}

// recover runs the steps of "Orphaned transactions" above, and retries each
// until it succeeds: a stage that starts while Kafka is down or still
// loading (a supervisor restarts a process at once when it could not end a
// transaction during a broker restart) must still look once Kafka is back,
// because that is when the restarted coordinator leaves the orphans. A step
// refused for good (not authorized) ends the check with a warning, and the
// stage runs without it. It returns an error only when closing orphans it
// found was refused.
func (s *TxnStage) recover(ctx context.Context, adm *kadm.Client, initProducer func(context.Context) (int64, error)) error {
	var (
		pre   lastTxn
		pid   int64
		step  = "describing the stage's transactional id"
		since = time.Now()
		wait  = 250 * time.Millisecond
		said  = since // warn after 30 s of failing: a new cluster has no coordinator for a few seconds
	)
	// retry reports whether to try step again after err (and waits).
	retry := func(err error) bool {
		if ctx.Err() != nil {
			return false
		}
		if !retriable(err) {
			s.log.Warn(step+" was refused; not looking for transactions Kafka left open", "err", err)
			return false
		}
		if time.Since(said) >= 30*time.Second {
			said = time.Now()
			s.log.Warn(step+" failed; retrying until Kafka answers (the stage starts once it looked for transactions Kafka left open)",
				"for", time.Since(since).Round(time.Second), "err", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return false
		}
		wait = min(2*wait, 5*time.Second)
		return true
	}
	for {
		var err error
		if pre, err = describeTxn(ctx, adm, s.opt.TransactionalID); err == nil {
			break
		}
		if !retry(err) {
			return nil
		}
	}
	step = "initialising the transactional producer"
	for {
		var err error
		if pid, err = initProducer(ctx); err == nil {
			break
		}
		if !retry(err) {
			return nil
		}
	}
	pids := map[int64]bool{pid: true}
	if pre.known {
		pids[pre.pid] = true
	}
	step = "waiting for the coordinator to finish the last transaction"
	for {
		post, err := describeTxn(ctx, adm, s.opt.TransactionalID)
		if err == nil && !post.settled() {
			err = fmt.Errorf("transaction state %s", post.state)
		}
		if err == nil {
			break
		}
		if !retry(err) {
			return nil
		}
	}
	step = "looking for transactions Kafka left open"
	looking := time.Now()
	for {
		found, err := s.findOrphans(ctx, adm, pids)
		if err != nil && retriable(err) && time.Since(looking) < time.Minute {
			if !retry(err) {
				return nil
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("looking for transactions Kafka left open: some partitions could not be described; closing what was found on the others", "err", err)
		}
		err = s.closeOrphans(ctx, adm, found, pre.commits())
		if err == nil || ctx.Err() != nil {
			return nil
		}
		var ke *kerr.Error
		if errors.As(err, &ke) && !ke.Retriable {
			return err // refused: the group or the consumers stay blocked
		}
		step = "closing transactions Kafka left open"
		if !retry(err) {
			return nil
		}
		// Look again: some were closed, a leader may have moved.
	}
}

// Orphans of a running stage.
//
// The restarted coordinator can also drop the markers of a transaction the
// running stage ended: its End succeeded (the coordinator completed the
// commit), yet a partition of the transaction stays open and holds its
// read-committed consumers for good, whatever the stage commits there
// later. So a running stage looks every OrphanSweep and closes, the way
// its End ended, a transaction of its producer that is still open on a
// partition:
//
//   - with an epoch below the producer's current one: under KIP-890 part 2
//     (transaction.version 2, Kafka 4's default) every transaction ends
//     with an epoch bump, so that transaction has ended; without it the
//     epoch never moves and nothing is ever closed here;
//   - whose End this incarnation saw (outcomes), which gives the decision;
//   - seen open at the same first offset at two looks in a row, so markers
//     the coordinator is still writing (a partition leader moving) are not
//     raced.
//
// A marker of an epoch below the partition's current one is refused by
// Kafka, so a partition a later transaction reopened is never closed here.

// txnKey names one transaction of a producer (KIP-890: one epoch each).
type txnKey struct {
	pid   int64
	epoch int16
}

// outcomes remembers how the stage's last transactions ended.
type outcomes struct {
	mu    sync.Mutex
	ended map[txnKey]bool // committed
	order []txnKey
}

const keptOutcomes = 4096

func (o *outcomes) record(pid int64, epoch int16, committed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended == nil {
		o.ended = map[txnKey]bool{}
	}
	k := txnKey{pid, epoch}
	if _, ok := o.ended[k]; !ok {
		o.order = append(o.order, k)
		if len(o.order) > keptOutcomes {
			delete(o.ended, o.order[0])
			o.order = o.order[1:]
		}
	}
	// Without an epoch bump (nothing was sent) a later End of the epoch
	// is the one Kafka saw.
	o.ended[k] = committed
}

func (o *outcomes) lookup(pid int64, epoch int16) (committed, known bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	committed, known = o.ended[txnKey{pid, epoch}]
	return committed, known
}

// orphanAt is one sighting of an open transaction.
type orphanAt struct {
	topic     string
	partition int32
	epoch     int16
	first     int64
}

// sweepOrphans runs the looks of "Orphans of a running stage" until ctx ends.
func (s *TxnStage) sweepOrphans(ctx context.Context, adm *kadm.Client) {
	tick := time.NewTicker(s.opt.OrphanSweep)
	defer tick.Stop()
	seen := map[orphanAt]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pid, epoch, err := s.sess.Client().ProducerID(ctx)
		if err != nil {
			continue
		}
		found, _ := s.findOrphans(ctx, adm, map[int64]bool{pid: true})
		now := map[orphanAt]bool{}
		var commit, abort []orphan
		for _, o := range found {
			if o.ProducerEpoch >= epoch {
				continue // the open transaction (or no KIP-890: epochs do not tell)
			}
			committed, known := s.outcomes.lookup(pid, o.ProducerEpoch)
			if !known {
				continue
			}
			at := orphanAt{o.Topic, o.Partition, o.ProducerEpoch, o.CurrentTxnStartOffset}
			now[at] = true
			if !seen[at] {
				continue
			}
			if committed {
				commit = append(commit, o)
			} else {
				abort = append(abort, o)
			}
		}
		seen = now
		for _, c := range []struct {
			found  []orphan
			commit bool
		}{{commit, true}, {abort, false}} {
			if err := s.closeOrphans(ctx, adm, c.found, c.commit); err != nil && ctx.Err() == nil {
				s.log.Warn("closing transactions Kafka left open failed; looking again", "err", err)
			}
		}
	}
}
