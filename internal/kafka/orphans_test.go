package kafka_test

import (
	"context"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

// orphanBroker starts a Kafka broker of the test's own (deploy/local/
// kafka.sh, own ports and data) with transaction partition verification
// off, so the test can leave a transaction open on partitions behind its
// coordinator's back: the state a SIGKILLed broker left in the chaos suite's
// kafka-single-restart (the coordinator finished a commit whose markers it
// dropped, see internal/kafka/orphans.go).
func orphanBroker(t *testing.T) string {
	t.Helper()
	testenv.Brokers(t) // skips where make test's stack is not running (java, the jars)
	if testing.Short() {
		t.Skip("starts its own broker")
	}
	root := testenv.RepoRoot(t)
	dir := t.TempDir()
	port, ctrl := testenv.FreePort(t), testenv.FreePort(t)
	env := append(os.Environ(),
		"PARTNERS_KAFKA_DIR="+dir, "KAFKA_PORT="+strconv.Itoa(port), "KAFKA_CONTROLLER_PORT="+strconv.Itoa(ctrl),
		"KAFKA_SASL=off", "KAFKA_NAME=kafka-orphans", "KAFKA_HEAP=384m", "KAFKA_WAIT_TIMEOUT=300",
		"KAFKA_EXTRA_CONFIG=transaction.partition.verification.enable=false\noffsets.topic.num.partitions=6\ntransaction.state.log.num.partitions=6")
	run := func(arg string) {
		cmd := exec.Command("bash", filepath.Join(root, "deploy/local/kafka.sh"), arg)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kafka.sh %s: %v\n%s", arg, err, out)
		}
	}
	run("start")
	t.Cleanup(func() { run("stop") })
	return "127.0.0.1:" + strconv.Itoa(port)
}

// leaveOpen leaves a transaction of txnID's producer open on the group's
// offsets (a pending commit of offset in/0 → at) and on out/0 (one record
// "orphan") that the coordinator does not know of: the pre-KIP-890
// requests, sent without AddOffsetsToTxn / AddPartitionsToTxn. If commitFirst,
// the id's last transaction is a committed one (state CompleteCommit).
func leaveOpen(t *testing.T, broker, txnID, group, in, out string, at int64, commitFirst bool) {
	t.Helper()
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.TransactionalID(txnID), kgo.MaxVersions(kversion.V3_7_0()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if commitFirst {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: out, Partition: 1, Value: []byte("committed")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	pid, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oc := kmsg.NewPtrTxnOffsetCommitRequest()
	oc.TransactionalID, oc.Group, oc.ProducerID, oc.ProducerEpoch, oc.Generation = txnID, group, pid, epoch, -1
	ot := kmsg.NewTxnOffsetCommitRequestTopic()
	ot.Topic = in
	op := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	op.Partition, op.Offset, op.LeaderEpoch = 0, at, -1
	ot.Partitions = append(ot.Partitions, op)
	oc.Topics = append(oc.Topics, ot)
	ocr, err := oc.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(ocr.Topics[0].Partitions[0].ErrorCode); err != nil {
		t.Fatalf("pending offset commit: %v", err)
	}

	rec := kmsg.Record{Value: []byte("orphan")}
	rec.Length = int32(len(rec.AppendTo(nil)) - 1)
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, Attributes: 0x10, // transactional
		FirstTimestamp: now, MaxTimestamp: now, ProducerID: pid, ProducerEpoch: epoch, NumRecords: 1, Records: rec.AppendTo(nil)}
	b.Length = int32(len(b.AppendTo(nil)) - 12)
	raw := b.AppendTo(nil)
	b.CRC = int32(crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	pr := kmsg.NewPtrProduceRequest()
	pr.TransactionID, pr.Acks, pr.TimeoutMillis = &txnID, -1, 10000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = out
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Records = b.AppendTo(nil)
	pt.Partitions = append(pt.Partitions, pp)
	pr.Topics = append(pr.Topics, pt)
	prr, err := pr.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(prr.Topics[0].Partitions[0].ErrorCode); err != nil {
		t.Fatalf("open transactional produce: %v", err)
	}
}

// TestTxnStageClosesTransactionsKafkaLeftOpen: a stage whose previous
// incarnation's transaction Kafka left open on its group's offsets and on
// its output (the coordinator finished it and dropped its markers) closes it
// at start, the way the coordinator decided, and then processes its input:
// without that its group's OffsetFetch answered UNSTABLE_OFFSET_COMMIT
// forever and it consumed nothing (the chaos suite's kafka-single-restart
// failure), and read-committed consumers of the output saw nothing past the
// open record.
func TestTxnStageClosesTransactionsKafkaLeftOpen(t *testing.T) {
	broker := orphanBroker(t)
	for _, tc := range []struct {
		name        string
		commitFirst bool // the last transaction of the id committed: the open one is committed
	}{{"after an open transaction (abort)", false}, {"after a commit (commit)", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			id := testenv.RandomID()
			in, out, group, txnID := "orphans-in-"+id, "orphans-out-"+id, "orphans-g-"+id, "orphans-g-"+id+"-instance-0"
			cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			adm := kadm.NewClient(cl)
			if _, err := adm.CreateTopics(ctx, 2, 1, nil, in, out); err != nil {
				t.Fatal(err)
			}
			const n, at = 40, 10
			var recs []*kgo.Record
			for i := 0; i < n; i++ {
				recs = append(recs, &kgo.Record{Topic: in, Partition: int32(i % 2), Value: []byte(strconv.Itoa(i))})
			}
			p, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			p.Close()
			leaveOpen(t, broker, txnID, group, in, out, at, tc.commitFirst)

			sctx, cancel := context.WithCancel(ctx)
			stage := kafka.NewTxnStage(kafka.TxnStageOptions{
				Name: "orphans", Client: []kgo.Opt{kgo.SeedBrokers(broker)}, Group: group, Topics: []string{in},
				Outputs: []string{out}, TransactionalID: txnID, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
			}, kafka.TxnHandlerFunc(func(r *kgo.Record, _ *kafka.Ticket) kafka.Accepted {
				return kafka.Accepted{Out: []*kgo.Record{{Topic: out, Partition: r.Partition, Value: r.Value}}}
			}))
			done := make(chan error, 1)
			go func() { done <- stage.Run(sctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("stage: %v", err)
				}
			}()

			// What the outputs must be: every input from the group's
			// committed start, once; the open record and the offset
			// commit of the open transaction both committed, or both
			// aborted.
			want := map[string]int{}
			for i := 0; i < n; i++ {
				if tc.commitFirst && i%2 == 0 && int64(i/2) < at {
					continue // below the committed offset of in/0
				}
				want[strconv.Itoa(i)] = 1
			}
			if tc.commitFirst {
				want["orphan"], want["committed"] = 1, 1
			}
			// A liveness bound, not a speed figure: the stage stalled
			// forever without the fix.
			deadline := time.Now().Add(90 * time.Second)
			var got map[string]int
			for {
				got = map[string]int{}
				for _, r := range readCommittedFrom(t, broker, out) {
					got[string(r.Value)]++
				}
				if equalCounts(got, want) || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Second)
			}
			if !equalCounts(got, want) {
				t.Fatalf("outputs (read committed) %v, want %v", got, want)
			}
		})
	}
}

func readCommittedFrom(t *testing.T, broker, topic string) []*kgo.Record {
	t.Helper()
	return readCommitted(t, []string{broker}, topic)
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestTxnStageLooksForOrphansUntilKafkaAnswers: a stage restarted while
// Kafka is still coming back (the coordinator loading, the previous
// incarnation's commit still being finished, a partition without a leader)
// must keep trying its start-up check and close the orphan once Kafka
// answers. It used to give up at the first "not settled" answer and start
// without looking: the orphan the restarted coordinator left then held the
// outputs' read-committed consumers for good (the chaos suite's
// kafka-single-restart, where the webhooks process exited during the
// outage and was restarted at once). Kafka's answers are scripted with
// kfake's request control; TestTxnStageClosesTransactionsKafkaLeftOpen
// closes a real orphan on a real broker.
func TestTxnStageLooksForOrphansUntilKafkaAnswers(t *testing.T) {
	t.Parallel()
	const in, out, txnID = "looks-in", "looks-out", "looks-g-instance-0"
	const oldPID, oldEpoch = 4242, 3
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, in, out))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()

	// DescribeTransactions: loading twice, then the previous incarnation's
	// commit being prepared (the decision: commit), then still preparing
	// after the producer initialised, then finished.
	var describes atomic.Int32
	kc.ControlKey(int16(kmsg.DescribeTransactions), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		n := describes.Add(1)
		req := kreq.(*kmsg.DescribeTransactionsRequest)
		resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
		for _, id := range req.TransactionalIDs {
			st := kmsg.NewDescribeTransactionsResponseTransactionState()
			st.TransactionalID, st.ProducerID, st.ProducerEpoch = id, oldPID, oldEpoch
			switch {
			case n <= 2:
				st.ErrorCode = kerr.CoordinatorLoadInProgress.Code
			case n <= 5:
				st.State = "PrepareCommit"
			default:
				st.State = "CompleteCommit"
			}
			resp.TransactionStates = append(resp.TransactionStates, st)
		}
		return resp, nil, true
	})
	// DescribeProducers: out/0 has no leader at first, then shows the
	// previous producer's transaction open from offset 0.
	var producers atomic.Int32
	kc.ControlKey(int16(kmsg.DescribeProducers), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		n := producers.Add(1)
		req := kreq.(*kmsg.DescribeProducersRequest)
		resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewDescribeProducersResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewDescribeProducersResponseTopicPartition()
				sp.Partition = p
				if rt.Topic == out && p == 0 {
					if n == 1 {
						sp.ErrorCode = kerr.NotLeaderForPartition.Code
					} else {
						ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
						ap.ProducerID, ap.ProducerEpoch, ap.CurrentTxnStartOffset, ap.LastSequence = oldPID, oldEpoch, 0, 0
						sp.ActiveProducers = append(sp.ActiveProducers, ap)
					}
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	markers := captureMarkers(kc, nil)

	brokers := kc.ListenAddrs()
	p, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ProduceSync(context.Background(), &kgo.Record{Topic: in, Partition: 1, Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	_, done := startCopyStage(t, kafka.TxnStageOptions{Name: "looks", Client: []kgo.Opt{kgo.SeedBrokers(brokers...)},
		Group: "looks-g", Topics: []string{in}, Outputs: []string{out}, TransactionalID: txnID}, out)
	// Liveness bounds, not speed figures: without the retries the stage
	// never closed the orphan.
	select {
	case m := <-markers:
		if want := (marker{oldPID, oldEpoch, true, out + "/0", 0}); m != want {
			t.Fatalf("marker %+v, want %+v (the previous producer's transaction committed, as its coordinator decided)", m, want)
		}
	case err := <-done:
		t.Fatalf("stage ended before closing the orphan: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("no marker written after %d DescribeTransactions and %d DescribeProducers", describes.Load(), producers.Load())
	}
	if n := describes.Load(); n < 6 {
		t.Errorf("closed the orphan after %d DescribeTransactions; the coordinator said finished only at the 6th", n)
	}
	// Then the stage works.
	got := readCommitted(t, brokers, out)
	deadline := time.Now().Add(60 * time.Second)
	for len(got) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		got = readCommitted(t, brokers, out)
	}
	if len(got) != 1 || string(got[0].Value) != "after" {
		t.Fatalf("outputs after the check: %d records, want the one input", len(got))
	}
	select {
	case m := <-markers:
		t.Errorf("a second marker %+v: the orphan was closed twice", m)
	default:
	}
}

// TestTxnStageSweepsOrphansWhileRunning: a transaction the running stage
// ended (committed) that Kafka still holds open on a partition its later
// transactions never touch is closed the way it ended, once it was seen
// open twice; the stage's open transaction (the current epoch) and another
// producer's are left alone. The open transactions are scripted with
// kfake's request control (DescribeProducers); the markers are written
// to a real broker in TestTxnStageClosesTransactionsKafkaLeftOpen.
func TestTxnStageSweepsOrphansWhileRunning(t *testing.T) {
	t.Parallel()
	const in, out, txnID = "sweep-in", "sweep-out", "sweep-g-instance-0"
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, in, out))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	brokers := kc.ListenAddrs()
	startCopyStage(t, kafka.TxnStageOptions{Name: "sweep", Client: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Group: "sweep-g",
		Topics: []string{in}, Outputs: []string{out}, TransactionalID: txnID, OrphanSweep: 200 * time.Millisecond}, out)
	p, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Three transactions, each committing one output.
	for i := range 3 {
		if err := p.ProduceSync(context.Background(), &kgo.Record{Topic: in, Partition: int32(i % 2), Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(readCommitted(t, brokers, out)) < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("output %d not committed", i)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ds, err := kadm.NewClient(p).DescribeTransactions(context.Background(), txnID)
	if err != nil {
		t.Fatal(err)
	}
	cur, ok := ds[txnID]
	if !ok || cur.Err != nil || cur.ProducerEpoch < 1 {
		t.Fatalf("the stage's transactional id: %+v (kfake must bump epochs, KIP-890)", cur)
	}
	pid, epoch := cur.ProducerID, cur.ProducerEpoch

	var looks atomic.Int32
	kc.ControlKey(int16(kmsg.DescribeProducers), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		looks.Add(1)
		req := kreq.(*kmsg.DescribeProducersRequest)
		resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
		open := func(pid int64, epoch int16, first int64) kmsg.DescribeProducersResponseTopicPartitionActiveProducer {
			ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
			ap.ProducerID, ap.ProducerEpoch, ap.CurrentTxnStartOffset = pid, int32(epoch), first
			return ap
		}
		for _, rt := range req.Topics {
			st := kmsg.NewDescribeProducersResponseTopic()
			st.Topic = rt.Topic
			for _, part := range rt.Partitions {
				sp := kmsg.NewDescribeProducersResponseTopicPartition()
				sp.Partition = part
				switch {
				case rt.Topic == out && part == 0: // the orphan: ended (committed) last
					sp.ActiveProducers = append(sp.ActiveProducers, open(pid, epoch-1, 7))
				case rt.Topic == out && part == 1: // the open transaction
					sp.ActiveProducers = append(sp.ActiveProducers, open(pid, epoch, 9))
				case rt.Topic == in && part == 0: // someone else's
					sp.ActiveProducers = append(sp.ActiveProducers, open(pid+1, 0, 3))
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	markers := captureMarkers(kc, looks.Load)
	select {
	case m := <-markers:
		if m.pid != pid || m.epoch != epoch-1 || !m.commit || m.where != out+"/0" {
			t.Fatalf("marker %+v, want a commit of producer %d epoch %d on %s/0", m, pid, epoch-1, out)
		}
		if m.looks < 2 {
			t.Errorf("closed at look %d: an orphan is closed only when seen open twice", m.looks)
		}
	case <-time.After(30 * time.Second): // a liveness bound
		t.Fatalf("no marker after %d looks", looks.Load())
	}
	// The open transaction and the other producer's stay open.
	for at := looks.Load(); looks.Load() < at+4; {
		time.Sleep(50 * time.Millisecond)
	}
	for {
		select {
		case m := <-markers:
			if m.where != out+"/0" {
				t.Errorf("closed %+v: not an ended transaction of the stage", m)
			}
			continue
		default:
		}
		break
	}
}

// marker is one transaction marker a stage asked WriteTxnMarkers for, with
// the count of looks (DescribeProducers) answered by then.
type marker struct {
	pid    int64
	epoch  int16
	commit bool
	where  string
	looks  int32
}

// captureMarkers answers kc's WriteTxnMarkers requests with success and
// sends every marker asked for to the returned channel; looks, if set,
// stamps each with its count.
func captureMarkers(kc *kfake.Cluster, looks func() int32) <-chan marker {
	markers := make(chan marker, 10)
	kc.ControlKey(int16(kmsg.WriteTxnMarkers), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		req := kreq.(*kmsg.WriteTxnMarkersRequest)
		resp := req.ResponseKind().(*kmsg.WriteTxnMarkersResponse)
		for _, m := range req.Markers {
			rm := kmsg.NewWriteTxnMarkersResponseMarker()
			rm.ProducerID = m.ProducerID
			for _, mt := range m.Topics {
				rt := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
				rt.Topic = mt.Topic
				for _, part := range mt.Partitions {
					mk := marker{m.ProducerID, m.ProducerEpoch, m.Committed, fmt.Sprintf("%s/%d", mt.Topic, part), 0}
					if looks != nil {
						mk.looks = looks()
					}
					markers <- mk
					rp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
					rp.Partition = part
					rt.Partitions = append(rt.Partitions, rp)
				}
				rm.Topics = append(rm.Topics, rt)
			}
			resp.Markers = append(resp.Markers, rm)
		}
		return resp, nil, true
	})
	return markers
}
