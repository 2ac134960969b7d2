package kafka_test

import (
	"context"
	"hash/crc32"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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
