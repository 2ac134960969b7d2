package attribution_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/benchrow"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
)

// TestBenchQuick runs the make-bench suite at its quick size so it cannot
// rot; the figures are logged, never asserted.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the benchmark suite")
	}
	env := benchrow.Env{ClickHouseAddr: testenv.ClickHouseAddr(), Quick: true, Brokers: testenv.Brokers(t),
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	rows, err := attribution.Bench(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 {
		t.Fatalf("want 5 rows, got %d", len(rows))
	}
	for _, r := range rows {
		t.Logf("%-75s %12.1f %-9s | %s %.1f | ratio %.3f", r.Name, r.Value, r.Unit, r.Baseline, r.BaselineValue, r.Ratio())
	}
}

func benchROI(b *testing.B, src roi.Source) {
	cfg := testenv.Config(b)
	conn := testenv.ClickHouse(b, cfg)
	if err := attribution.SeedSynthetic(context.Background(), conn, 200_000, time.Time{}); err != nil {
		b.Fatal(err)
	}
	q := roi.Query{Model: "last_touch", Window: 30}
	b.ResetTimer()
	for b.Loop() {
		if _, err := roi.Load(context.Background(), conn, q, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkROIRollups(b *testing.B) { benchROI(b, roi.Rollups) }
func BenchmarkROIRaw(b *testing.B)     { benchROI(b, roi.Raw) }
