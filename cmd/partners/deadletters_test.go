package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestDLQRead: `partners dlq read --queue attribution` lists the attribution
// dead letters from Kafka, newest first, with the record each stands for and
// its reason; filters by reason code and time, limits, prints JSON whole,
// shows a value that is not a dead letter instead of dropping it, and ends
// on a partition whose last offset is a transaction marker.
func TestDLQRead(t *testing.T) {
	brokers := testenv.Brokers(t)
	prefix := "dlqread" + testenv.RandomID() + "."
	topic := prefix + schemas.TopicAttrDLQ
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	txn, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("dlqread-"+testenv.RandomID()), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = adm.DeleteTopics(context.Background(), topic) }()
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	dl := func(code, reason, src string, part int32, off int64, size int) []byte {
		b, _ := json.Marshal(schemas.DeadLetter{SchemaVersion: "1", Reason: reason, ReasonCode: code, SourceTopic: src,
			SourcePartition: &part, SourceOffset: &off, PayloadBytes: size})
		return b
	}
	recs := []*kgo.Record{
		{Partition: 0, Timestamp: base, Value: dl("malformed_record", "touchpoint: user_id: missing", "partners.touchpoints.v1", 1, 42, 180)},
		{Partition: 1, Timestamp: base.Add(time.Minute), Value: dl("oversized_record", "record is 800000 bytes, over max_record_bytes (65536)", "partners.touchpoints.v1", 0, 7, 800000)},
		{Partition: 1, Timestamp: base.Add(2 * time.Minute), Value: []byte("not a dead letter")},
		{Partition: 0, Timestamp: base.Add(3 * time.Minute), Value: dl("unwritable_record", "ClickHouse refused it:\n  code 27", "partners.conversions.v1", 2, 9, 300)},
	}
	if err := cl.ProduceSync(ctx, recs[:3]...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// The newest in a transaction: partition 0 ends on its commit marker.
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, recs[3]).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (string, error) {
		t.Helper()
		t.Setenv("PARTNERS_KAFKA_BROKERS", strings.Join(brokers, ","))
		t.Setenv("PARTNERS_TOPIC_PREFIX", prefix)
		var out, errOut bytes.Buffer
		a := &app{stdout: &out, stderr: &errOut}
		root := a.rootCmd()
		root.SetArgs(append([]string{"--config", "../../config/partners-engine.yaml", "dlq", "read"}, args...))
		err := root.Execute()
		return out.String(), err
	}

	out, err := run("--queue", "attribution")
	if err != nil {
		t.Fatalf("dlq read: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("want a header and 4 rows:\n%s", out)
	}
	for i, want := range []string{
		"partners.conversions.v1/2@9  unwritable_record  300",
		"not a dead letter",
		"partners.touchpoints.v1/0@7  oversized_record   800000",
		"partners.touchpoints.v1/1@42 malformed_record   180",
	} {
		if got := strings.Join(strings.Fields(lines[i+1]), " "); !strings.Contains(got, strings.Join(strings.Fields(want), " ")) {
			t.Errorf("row %d (newest first): want %q in %q", i+1, want, lines[i+1])
		}
	}
	if !strings.Contains(lines[1], "ClickHouse refused it: code 27") {
		t.Errorf("a reason over several lines is folded onto its row: %q", lines[1])
	}

	out, err = run("--queue", "attribution", "--reason", "oversized_record", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []struct {
		Queue      string             `json:"queue"`
		Partition  int32              `json:"dlq_partition"`
		DeadLetter schemas.DeadLetter `json:"dead_letter"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if len(got) != 1 || got[0].DeadLetter.ReasonCode != "oversized_record" || got[0].Partition != 1 || got[0].Queue != "attribution" ||
		got[0].DeadLetter.PayloadBytes != 800000 {
		t.Errorf("--reason oversized_record --format json: %+v", got)
	}

	out, err = run("--queue", "attribution", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "unwritable_record") {
		t.Errorf("--limit 2 keeps the newest two:\n%s", out)
	}

	// --limit 1: the read keeps only the newest while it goes (4 records
	// are more than twice the limit), and the newest is still the one kept.
	out, err = run("--queue", "attribution", "--limit", "1")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "unwritable_record") {
		t.Errorf("--limit 1 keeps the newest:\n%s", out)
	}

	out, err = run("--queue", "attribution", "--since", base.Add(90*time.Second).UTC().Format(time.RFC3339Nano))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || strings.Contains(out, "oversized_record") {
		t.Errorf("--since keeps the two written after it:\n%s", out)
	}
	out, err = run("--queue", "attribution", "--since", "2099-01-01T00:00:00Z")
	if err != nil || !strings.Contains(out, "no dead letters in "+topic+" since 2099-01-01T00:00:00Z") {
		t.Errorf("--since in the future: %v\n%s", err, out)
	}

	_, err = run("--queue", "billing")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), `--queue: want attribution, tenants or webhooks, got "billing"`) {
		t.Errorf("unknown queue: %v", err)
	}
}
