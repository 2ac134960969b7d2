package attribution_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestLedgerFromAnotherKafkaRefused: a database whose ingest ledger was
// written from one Kafka cluster, consumed from another whose topics start
// at offset 0 (a reset `partners dev` broker, a migrated cluster, re-created
// topics), would skip every new record below the old end offsets as already
// counted — ROI silently missing them. The processor refuses to start and
// says what to do; on the brokers the ledger came from it still runs.
func TestLedgerFromAnotherKafkaRefused(t *testing.T) {
	e := newEnv(t)
	stop := e.start(t, nil)
	e.publishDataset(t, oracleDataset(time.Now().UTC(), "foreign-"))
	e.waitCaughtUp(t, 60*time.Second)
	stop()

	topics := []string{e.names.Topic(schemas.TopicTouchpoints), e.names.Topic(schemas.TopicConversions), e.names.Topic(schemas.TopicCosts)}
	other, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(e.cfg.Kafka.Partitions), topics...))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	run := func(brokers []string) error {
		p, err := attribution.New(attribution.Options{Config: e.cfg.Partner.Attribution, Kafka: kafka.Cluster{Config: e.cfg.Kafka, Brokers: brokers},
			Conn: e.conn, Producer: e.cl, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return p.Run(ctx)
	}
	err = run(other.ListenAddrs())
	if !errors.Is(err, attribution.ErrForeignLedger) {
		t.Fatalf("Run on other brokers with this database's ledger: %v, want ErrForeignLedger", err)
	}
	for _, want := range []string{topics[0] + "/", "the partition ends at 0", "clickhouse.database"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	// The other brokers' topics grow past the ledger's offsets (topics
	// created again and written for a while): the offsets no longer give it
	// away, the topic ids do.
	ends, err := kadm.NewClient(e.cl).ListEndOffsets(context.Background(), topics...)
	if err != nil {
		t.Fatal(err)
	}
	ocl, err := kgo.NewClient(kgo.SeedBrokers(other.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer ocl.Close()
	var recs []*kgo.Record
	ends.Each(func(o kadm.ListedOffset) {
		for range o.Offset + 5 {
			recs = append(recs, &kgo.Record{Topic: o.Topic, Partition: o.Partition, Value: []byte("{}")})
		}
	})
	if err := ocl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	err = run(other.ListenAddrs())
	if !errors.Is(err, attribution.ErrForeignLedger) {
		t.Fatalf("Run on other brokers whose topics are longer than the ledger: %v, want ErrForeignLedger", err)
	}
	for _, want := range []string{topics[0] + " is not the topic it counted", "topic id", "clickhouse.database"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "the partition ends at") {
		t.Errorf("the other topics are longer than the ledger, yet the error names a partition end: %v", err)
	}
	// Its own brokers: runs until the context ends.
	if err := run(e.brokers); err != nil {
		t.Fatalf("Run on the ledger's own brokers: %v", err)
	}
}
