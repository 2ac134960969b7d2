package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/chdb"
)

// TestServerVersions reports the servers the suite runs against (make test
// prints it before the suite) and fails if they are not reachable.
func TestServerVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokers := Brokers(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	vs, err := kadm.NewClient(cl).ApiVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kind := "kfake (embedded)"
	if RealKafka() {
		kind = "Apache Kafka"
	}
	vs.Each(func(v kadm.BrokerApiVersions) {
		t.Logf("server under test: %s %s at %v", kind, v.VersionGuess(), brokers)
	})
	conn := ClickHouse(t, Config(t))
	v, err := chdb.ServerVersion(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server under test: ClickHouse %s at %s", v, ClickHouseAddr())
}
