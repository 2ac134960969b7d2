// Package benchtest is how a benchmark reports a `make bench` figure: a
// measured value beside a baseline measured in the same run, so the figure
// reads as a ratio that survives noisy, shared machines. Only _test.go files
// import it; the production binary never links it.
//
// A figure benchmark measures once, then calls Report:
//
//	func BenchmarkRebuild(b *testing.B) {
//		took, base := measure(b)                     // the scenario, run once
//		benchtest.Report(b, benchtest.Figure{
//			Name: "registry rebuild (20000 tenants)", Value: n / took.Seconds(), Unit: "tenants/s",
//			Baseline: "raw franz-go read of the same records", BaselineValue: n / base.Seconds()})
//	}
//
// Report runs one sub-benchmark per figure that only reports metrics, and a
// benchmark with sub-benchmarks runs its body once whatever -benchtime says,
// so the scenario is never repeated. Under `go test -bench` the figures show
// as metrics (value, baseline-<unit>, ratio; benchstat reads them); under
// `make bench` (bench/) they are also appended to $PARTNERS_BENCH_OUT as
// JSON lines, which the bench command prints as one aligned table and writes
// to bench-results.json. Micro-benchmarks inside a figure can be timed with
// NsPerOp.
package benchtest

import (
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// Figure is one measured value and its same-run baseline.
type Figure struct {
	Name          string  `json:"name"`
	Value         float64 `json:"value"`
	Unit          string  `json:"unit"`                     // no spaces: "tenants/s", "ms", "ns/KB"
	Baseline      string  `json:"baseline,omitempty"`       // what the baseline measures; empty: none
	BaselineValue float64 `json:"baseline_value,omitempty"` // in Unit
}

// Ratio is Value/BaselineValue, or 0 without a baseline.
func (f Figure) Ratio() float64 {
	if f.BaselineValue == 0 {
		return 0
	}
	return f.Value / f.BaselineValue
}

// Record is a figure as written to $PARTNERS_BENCH_OUT.
type Record struct {
	Suite     string `json:"suite"`     // the package, relative to the module ("control-plane/registry")
	Benchmark string `json:"benchmark"` // the benchmark's name
	Figure
}

// OutEnv names the file figures are appended to (set by make bench).
const OutEnv = "PARTNERS_BENCH_OUT"

// QuickEnv, set to 1, asks for the smaller sizes (a smoke run).
const QuickEnv = "PARTNERS_BENCH_QUICK"

// Quick reports whether benchmarks should use their smaller sizes: with
// PARTNERS_BENCH_QUICK=1 or under -short.
func Quick() bool { return os.Getenv(QuickEnv) == "1" || testing.Short() }

var outMu sync.Mutex

// Report reports figures of b: one sub-benchmark per figure carrying its
// value, baseline and ratio as metrics, and one JSON line each in
// $PARTNERS_BENCH_OUT when set. A figure without a value fails b.
func Report(b *testing.B, figs ...Figure) {
	b.Helper()
	suite := callerPackage()
	for _, f := range figs {
		if f.Value <= 0 || f.Unit == "" || strings.ContainsAny(f.Unit, " \t") {
			b.Fatalf("figure %q: value %v, unit %q (a positive value and a unit without spaces)", f.Name, f.Value, f.Unit)
		}
		if f.Baseline != "" && f.BaselineValue <= 0 {
			b.Fatalf("figure %q: baseline %q without a value", f.Name, f.Baseline)
		}
		b.Run(f.Name, func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(f.Value, f.Unit)
			if f.Baseline != "" {
				b.ReportMetric(f.BaselineValue, "baseline-"+f.Unit)
				b.ReportMetric(f.Ratio(), "ratio")
			}
		})
		if out := os.Getenv(OutEnv); out != "" {
			write(b, out, Record{Suite: suite, Benchmark: b.Name(), Figure: f})
		}
	}
}

func write(b *testing.B, path string, r Record) {
	line, err := json.Marshal(r)
	if err != nil {
		b.Fatal(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		b.Fatal(err)
	}
}

// NsPerOp times f as a benchmark of its own (testing.Benchmark, so it
// loops b.N times for about -benchtime) and returns its ns/op.
func NsPerOp(f func(b *testing.B)) float64 {
	r := testing.Benchmark(f)
	if r.N == 0 {
		return 0
	}
	return float64(r.T.Nanoseconds()) / float64(r.N)
}

const module = "github.com/partners-engine/partners-engine/"

// callerPackage is the package of Report's caller, relative to the module.
func callerPackage() string {
	pc, _, _, ok := runtime.Caller(2)
	if !ok {
		return "?"
	}
	name := runtime.FuncForPC(pc).Name() // module/path/pkg[_test].Func...
	name = strings.TrimPrefix(name, module)
	slash := strings.LastIndex(name, "/")
	if dot := strings.Index(name[slash+1:], "."); dot >= 0 {
		name = name[:slash+1+dot]
	}
	return strings.TrimSuffix(name, "_test")
}
