package attribution_test

import (
	"fmt"
	"context"
	"log/slog"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestScratchProfileIngest(t *testing.T) {
	if os.Getenv("SCRATCH_PROF") == "" {
		t.Skip()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := config.Default()
	id := testenv.RandomID()
	cfg.Kafka.TopicPrefix = "prof" + id + "."
	cfg.ClickHouse.Addr = []string{testenv.ClickHouseAddr()}
	cfg.ClickHouse.Database = "partners_prof_" + id
	if v := os.Getenv("SCRATCH_BATCH"); v != "" {
		fmt.Sscan(v, &cfg.Partner.Attribution.Batch.Size)
	}
	brokers := testenv.Brokers(t)
	cl, err := kafka.NewClient(cfg.Kafka, brokers, log, kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		t.Fatal(err)
	}
	conn, err := openBenchDB(ctx, cfg.ClickHouse, log)
	if err != nil {
		t.Fatal(err)
	}
	defer dropBenchDB(ctx, conn, cfg.ClickHouse)
	f, _ := os.Create(os.Getenv("SCRATCH_PROF"))
	pprof.StartCPUProfile(f)
	t0 := time.Now()
	rows, err := benchIngest(ctx, &cfg, brokers, cl, conn, log, 150_000)
	pprof.StopCPUProfile()
	f.Close()
	mf, _ := os.Create(os.Getenv("SCRATCH_PROF") + ".mem")
	pprof.Lookup("allocs").WriteTo(mf, 0)
	mf.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		t.Logf("%s %.0f %s | %s %.0f | ratio %.3f (%v)", r.Name, r.Value, r.Unit, r.Baseline, r.BaselineValue, r.Ratio(), time.Since(t0))
	}
}
