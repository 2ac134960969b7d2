package main

import (
	"strings"
	"testing"

	"github.com/partners-engine/partners-engine/internal/benchtest"
)

func TestNum(t *testing.T) {
	t.Parallel()
	for v, want := range map[float64]string{132200: "132,200", 1_040_000: "1,040,000", 2345.6: "2,346", 443.14: "443.1",
		18.273: "18.27", 0.95: "0.950", 0.0123: "0.0123", 0.000456: "0.000456", 0: "0", -1500: "-1,500"} {
		if got := Num(v); got != want {
			t.Errorf("Num(%v) = %q, want %q", v, got, want)
		}
		if strings.ContainsAny(Num(v), "eE") {
			t.Errorf("Num(%v) uses an exponent", v)
		}
	}
}

func TestTableAligns(t *testing.T) {
	t.Parallel()
	out := Table([]benchtest.Record{
		{Suite: "control-plane/registry", Figure: benchtest.Figure{Name: "registry rebuild (20000 tenants)", Value: 99_000, Unit: "tenants/s", Baseline: "raw franz-go read", BaselineValue: 1_040_000}},
		{Suite: "processors/attribution", Figure: benchtest.Figure{Name: "ROI, one partner", Value: 18.2, Unit: "ms", Baseline: "raw tables", BaselineValue: 13.3}},
		{Suite: "x", Figure: benchtest.Figure{Name: "no baseline", Value: 0.5, Unit: "s"}},
	})
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	for _, l := range lines[1:] {
		if len([]rune(l)) != len([]rune(lines[0])) {
			t.Errorf("columns do not line up:\n%s", out)
			break
		}
	}
	if !strings.Contains(out, "0.095") || !strings.Contains(out, "1.368") || !strings.Contains(out, "1,040,000") {
		t.Errorf("ratios or values missing:\n%s", out)
	}
}
