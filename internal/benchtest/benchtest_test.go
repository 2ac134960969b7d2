package benchtest

import "testing"

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

// BenchmarkReport exercises Report as make bench does (go test -bench).
func BenchmarkReport(b *testing.B) {
	Report(b, Figure{Name: "example", Value: 132_200, Unit: "rec/s", Baseline: "twice as fast", BaselineValue: 264_400})
}
