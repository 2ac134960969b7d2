package kafka_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// readCommitted reads a topic (read committed) from its start to its end.
func readCommitted(t *testing.T, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for {
		pctx, pc := context.WithTimeout(ctx, 1500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pc()
		if fs.NumRecords() == 0 || ctx.Err() != nil {
			return out
		}
		out = append(out, fs.Records()...)
	}
}

// TestTxnStageExactlyOnce runs a stage whose handler finishes records out
// of order, later, in several parts, and stops it twice in the middle of
// the stream: every input produces its outputs exactly once in the output
// topic (read committed) and every offset is committed.
func TestTxnStageExactlyOnce(t *testing.T) {
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	names := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}
	in, out := names.Topic(schemas.TopicEvents), names.Topic(schemas.TopicDeliveries)
	const n = 3000
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		recs = append(recs, &kgo.Record{Topic: in, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	const window = 64
	var handled atomic.Int64
	committed := func() int64 {
		offs, err := kadm.NewClient(cl).FetchOffsets(context.Background(), names.Group(cfg.Kafka.GroupPrefix, "stage-test"))
		if err != nil {
			return -1
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		return sum
	}
	run := func(until func() bool) {
		h := kafka.TxnHandlerFunc(func(r *kgo.Record, tk *kafka.Ticket) kafka.Accepted {
			v := string(r.Value)
			// Two parts, each finished after a random delay on its own
			// goroutine; every fifth record also has an output of its own.
			// One part declared; it adds the second (Ticket.Add) before
			// it finishes, as a fan-out does.
			a := kafka.Accepted{Parts: 1}
			if len(v) > 0 && v[len(v)-1] == '5' {
				a.Out = []*kgo.Record{{Topic: out, Key: r.Key, Value: []byte(v + "/own")}}
			}
			finish := func(part int) {
				select {
				case <-time.After(time.Duration(rand.IntN(3000)) * time.Microsecond):
				case <-tk.Context().Done():
					tk.Drop()
					return
				}
				tk.Done(&kgo.Record{Topic: out, Key: r.Key, Value: []byte(v + "/" + strconv.Itoa(part))})
			}
			go func() {
				tk.Add(1)
				go finish(1)
				finish(0)
			}()
			handled.Add(1)
			return a
		})
		st := kafka.NewTxnStage(kafka.TxnStageOptions{Name: "test", Client: kafka.Cluster{Config: cfg.Kafka, Brokers: brokers}.Opts(),
			Group: names.Group(cfg.Kafka.GroupPrefix, "stage-test"), Topics: []string{in},
			TransactionalID: names.Group(cfg.Kafka.GroupPrefix, "stage-test") + "-1", MaxOutstanding: window}, h)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- st.Run(ctx) }()
		deadline := time.Now().Add(60 * time.Second)
		for !until() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run(func() bool { return handled.Load() >= n/3 })
	run(func() bool { return handled.Load() >= 2*n/3 })
	run(func() bool { return committed() == n }) // to the end
	got := map[string]int{}
	for _, r := range readCommitted(t, brokers, out) {
		got[string(r.Value)]++
	}
	missing, twice := 0, 0
	for i := 0; i < n; i++ {
		v := strconv.Itoa(i)
		want := []string{v + "/0", v + "/1"}
		if v[len(v)-1] == '5' {
			want = append(want, v+"/own")
		}
		for _, w := range want {
			switch got[w] {
			case 0:
				missing++
			case 1:
			default:
				twice++
			}
		}
	}
	if missing > 0 || twice > 0 {
		t.Fatalf("%d outputs missing, %d produced more than once (of %d inputs)", missing, twice, n)
	}
	if c := committed(); c != n {
		t.Fatalf("committed %d offsets, want %d", c, n)
	}
	t.Logf("%d inputs handled %d times across 3 runs; every output exactly once", n, handled.Load())
}

// TestConsumePermanentAndRebalance: a poison record named by a permanent
// error goes to the dead-letter function and the partition goes on; a batch
// that keeps failing with a retryable error releases its partitions, so a
// member joining the group gets its share instead of waiting behind it.
func TestConsumePermanentAndRebalance(t *testing.T) {
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	names := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}
	topic := names.Topic(schemas.TopicEvents)
	group := names.Group(cfg.Kafka.GroupPrefix, "contract-test")
	log := slog.New(slog.DiscardHandler)
	var recs []*kgo.Record
	for i := 0; i < 60; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
	}
	recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("poison"), Value: []byte("poison")})
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	newConsumer := func() *kgo.Client {
		c, err := kafka.NewClient(cfg.Kafka, brokers, log, append(kafka.ConsumerOptions(), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic))...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var mu sync.Mutex
	handledBy := map[string]string{}
	var dead []string
	failing := int32(-1) // the partition member a fails forever, once it has one
	consume := func(name string, c *kgo.Client, ctx context.Context) chan error {
		done := make(chan error, 1)
		go func() {
			done <- kafka.ConsumeWith(ctx, c, log, kafka.ConsumeOptions{
				DeadLetter: func(_ context.Context, rs []*kgo.Record, reason error) error {
					mu.Lock()
					defer mu.Unlock()
					for _, r := range rs {
						dead = append(dead, string(r.Value)+": "+reason.Error())
					}
					return nil
				},
			}, func(_ context.Context, rs []*kgo.Record) error {
				mu.Lock()
				defer mu.Unlock()
				for _, r := range rs {
					if string(r.Value) == "poison" {
						return kafka.Permanent(errors.New("not a number"), r)
					}
				}
				if name == "a" {
					if failing < 0 {
						failing = rs[0].Partition
					}
					for _, r := range rs {
						if r.Partition == failing {
							return errors.New("downstream unavailable")
						}
					}
				}
				for _, r := range rs {
					handledBy[string(r.Value)] = name
				}
				return nil
			})
		}()
		return done
	}
	ca := newConsumer()
	defer ca.Close()
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	doneA := consume("a", ca, ctxA)
	testenv.Eventually(t, 30*time.Second, "member a failing on one partition", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failing >= 0
	})
	// Member b joins: the rebalance must go through although a's batch of
	// the failing partition never succeeds.
	cb := newConsumer()
	defer cb.Close()
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	doneB := consume("b", cb, ctxB)
	testenv.Eventually(t, 40*time.Second, "member b got a share and handled it", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, by := range handledBy {
			if by == "b" {
				return true
			}
		}
		return false
	})
	// Stop a: b takes everything, including a's failing partition.
	cancelA()
	<-doneA
	ca.Close()
	testenv.Eventually(t, 60*time.Second, "every record handled or dead-lettered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handledBy) == 60 && len(dead) >= 1
	})
	cancelB()
	<-doneB
	mu.Lock()
	defer mu.Unlock()
	for _, d := range dead {
		if d != "poison: not a number" {
			t.Errorf("dead letter %q", d)
		}
	}
}

// TestTxnStageSurvivesAFailedSession: a transaction that cannot be ended
// (here EndTxn refused twice; in the chaos suite's kafka-single-restart,
// the only broker down for longer than the client retries) used to end Run
// with an error, and the webhooks process exited until a supervisor
// restarted it. The stage now starts a new Kafka session, which aborts the
// failed transaction and polls the unfinished records again: every input
// is output exactly once (read committed) and Run goes on. Kafka's answers
// are scripted with kfake's request control; the chaos suite restarts a
// real broker under the whole webhooks process.
func TestTxnStageSurvivesAFailedSession(t *testing.T) {
	t.Parallel()
	const in, out = "session-in", "session-out"
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, in, out))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	var refused atomic.Int32
	kc.ControlKey(int16(kmsg.EndTxn), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.EndTxnRequest)
		if !req.Commit || refused.Load() >= 2 {
			if refused.Load() >= 2 {
				kc.DropControl()
			} else {
				kc.KeepControl()
			}
			return nil, nil, false
		}
		kc.KeepControl()
		refused.Add(1)
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.InvalidTxnState.Code
		return resp, nil, true
	})
	brokers := kc.ListenAddrs()
	p, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 60
	for i := range n {
		if err := p.ProduceSync(context.Background(), &kgo.Record{Topic: in, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var logs testenv.LogBuffer
	began := time.Now()
	st, done := startCopyStage(t, kafka.TxnStageOptions{Name: "session", Client: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Group: "session-g",
		Topics: []string{in}, Outputs: []string{out}, TransactionalID: "session-g-instance-0",
		Log: slog.New(slog.NewJSONHandler(&logs, nil))}, out)
	want := map[string]int{}
	for i := range n {
		want[strconv.Itoa(i)] = 1
	}
	deadline := time.Now().Add(60 * time.Second) // a liveness bound: Run ended at the first refusal
	var got map[string]int
	for {
		select {
		case err := <-done:
			t.Fatalf("Run ended after %d refused commits: %v", refused.Load(), err)
		default:
		}
		got = map[string]int{}
		for _, r := range readCommitted(t, brokers, out) {
			got[string(r.Value)]++
		}
		if len(got) == n || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for k, c := range got {
		if want[k] != 1 || c != 1 {
			t.Errorf("output %q: %d times, want once (input exists: %v)", k, c, want[k] == 1)
		}
	}
	if len(got) != n {
		t.Fatalf("%d of %d inputs output", len(got), n)
	}
	if refused.Load() != 2 || st.SessionRestarts() < 1 {
		t.Errorf("refused %d commits, %d new sessions: the failure was not exercised", refused.Load(), st.SessionRestarts())
	}
	// Each failed session says since when the work it redoes was polled
	// (operators and the fault suite's repeat bound read it): after the
	// test began, before the failure, with the records it held.
	failures := 0
	for line := range strings.SplitSeq(logs.String(), "\n") {
		var l struct {
			Time    time.Time `json:"time"`
			Msg     string    `json:"msg"`
			Since   time.Time `json:"uncommitted_since"`
			Records int       `json:"uncommitted_records"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || !strings.Contains(l.Msg, "session failed") {
			continue
		}
		failures++
		if l.Since.Before(began) || l.Since.After(l.Time) || l.Records <= 0 {
			t.Errorf("failed session logged uncommitted_since %v, %d records (test began %v, logged %v): not the redone work's start",
				l.Since, l.Records, began, l.Time)
		}
	}
	if failures == 0 {
		t.Errorf("no failed session logged; logs:\n%s", logs.String())
	}
}

// startCopyStage runs a stage that copies every input (key and value) to
// out until the test ends, when it checks that Run ended without an error.
// done receives Run's result if it ends before.
func startCopyStage(t *testing.T, opt kafka.TxnStageOptions, out string) (st *kafka.TxnStage, done <-chan error) {
	t.Helper()
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	st = kafka.NewTxnStage(opt, kafka.TxnHandlerFunc(func(r *kgo.Record, _ *kafka.Ticket) kafka.Accepted {
		return kafka.Accepted{Out: []*kgo.Record{{Topic: out, Key: r.Key, Value: r.Value}}}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	result := make(chan error, 1)
	go func() { err := st.Run(ctx); ended <- err; result <- err }()
	t.Cleanup(func() {
		cancel()
		if err := <-result; err != nil {
			t.Errorf("stage: %v", err)
		}
	})
	return st, ended
}

// TestTxnStageStaticMembership: a stage is a static member of its group
// (its transactional id is its group.instance.id), so a restarted instance
// takes its partitions back without waiting out its predecessor; and a
// stage that stops leaves the group by that id at once — a static member's
// client does not leave when it closes, and without the explicit leave its
// partitions would stay with it for the session timeout.
func TestTxnStageStaticMembership(t *testing.T) {
	cfg := testenv.Config(t)
	brokers, cl := testenv.Kafka(t, cfg)
	names := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}
	in, out := names.Topic(schemas.TopicEvents), names.Topic(schemas.TopicDeliveries)
	group := names.Group(cfg.Kafka.GroupPrefix, "static-test")
	txnID := group + "-host:1" // ':' is not allowed in an instance id: the stage maps it
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: in, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	members := func() []string {
		gs, err := adm.DescribeGroups(context.Background(), group)
		if err != nil {
			return nil
		}
		var ids []string
		for _, m := range gs[group].Members {
			if m.InstanceID != nil {
				ids = append(ids, *m.InstanceID)
			}
		}
		return ids
	}
	st := kafka.NewTxnStage(kafka.TxnStageOptions{Name: "static", Client: kafka.Cluster{Config: cfg.Kafka, Brokers: brokers}.Opts(),
		Group: group, Topics: []string{in}, Outputs: []string{out}, TransactionalID: txnID},
		kafka.TxnHandlerFunc(func(r *kgo.Record, _ *kafka.Ticket) kafka.Accepted {
			return kafka.Accepted{Out: []*kgo.Record{{Topic: out, Value: r.Value}}}
		}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	want := group + "-host_1"
	testenv.Eventually(t, 60*time.Second, "the stage is a static member of its group", func() bool {
		ids := members()
		return len(ids) == 1 && ids[0] == want
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Right after Run returned: no waiting for the session timeout.
	if ids := members(); len(ids) != 0 {
		t.Fatalf("after the stage stopped the group still has static members %v", ids)
	}
}
