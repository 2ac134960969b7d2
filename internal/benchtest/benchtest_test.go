package benchtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func pkgOf() string { return callerPackage() }

func TestCallerPackage(t *testing.T) {
	t.Parallel()
	if got := pkgOf(); got != "internal/benchtest" {
		t.Fatalf("got %q", got)
	}
}

func TestRatio(t *testing.T) {
	t.Parallel()
	if r := (Figure{Value: 3, BaselineValue: 4}).Ratio(); r != 0.75 {
		t.Fatalf("ratio %v", r)
	}
	if r := (Figure{Value: 3}).Ratio(); r != 0 {
		t.Fatalf("ratio without a baseline %v", r)
	}
}

// TestReport runs Report as make bench does (a benchmark, figures appended
// to $PARTNERS_BENCH_OUT) and reads back the JSON line it wrote. It is a
// test, not a benchmark, so make bench never prints its made-up figure.
func TestReport(t *testing.T) {
	out := filepath.Join(t.TempDir(), "figures.jsonl")
	t.Setenv(OutEnv, out)
	fig := Figure{Name: "example", Value: 132_200, Unit: "rec/s", Baseline: "twice as fast", BaselineValue: 264_400}
	testing.Benchmark(func(b *testing.B) { Report(b, fig) })
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%v: %q", err, b)
	}
	if rec.Suite != "internal/benchtest" || rec.Figure != fig || rec.Ratio() != 0.5 {
		t.Errorf("wrote %+v, want suite internal/benchtest and %+v", rec, fig)
	}
}
