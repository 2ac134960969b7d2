package xds_test

import (
	"context"
	"log/slog"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/internal/benchrow"
)

// BenchmarkBuild is one region's build and validation (the same whatever
// the tenant count).
func BenchmarkBuild(b *testing.B) {
	bl := xds.NewBuilder(xds.NewConfig(goldenConfig(b)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := bl.Build("us-east")
		if err != nil {
			b.Fatal(err)
		}
		snap, _ := cachev3.NewSnapshot("1", res)
		if _, err := xds.Validate(snap); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBenchRuns runs the make-bench suite in its quick form, so it cannot
// rot; its figures are printed, never asserted.
func TestBenchRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("make bench runs it in full")
	}
	rows, err := xds.Bench(context.Background(), benchrow.Env{Quick: true, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, r := range rows {
		if r.Value <= 0 || r.BaselineValue <= 0 {
			t.Fatalf("row without a measurement: %+v", r)
		}
		t.Logf("%s: %.3f %s (baseline %s: %.3f, ratio %.2f)", r.Name, r.Value, r.Unit, r.Baseline, r.BaselineValue, r.Ratio())
	}
}
