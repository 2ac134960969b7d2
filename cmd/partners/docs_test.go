package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestMetricsDocumented keeps docs/sre.md's metrics table and the metrics the
// code registers in step: every partners_* metric declared in the code is
// documented, and every documented one exists.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/sre.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(partners_[a-z0-9_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	declared := map[string]string{}
	nameRe := regexp.MustCompile(`Name:\s*"(partners_[a-z0-9_]+)"`)
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "../.." || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range nameRe.FindAllStringSubmatch(string(b), -1) {
			declared[m[1]] = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(declared) < 10 {
		t.Fatalf("found only %d metrics in the code: the scan is broken", len(declared))
	}
	var missing, stale []string
	for m, at := range declared {
		if !documented[m] {
			missing = append(missing, m+" ("+at+")")
		}
	}
	for m := range documented {
		if _, ok := declared[m]; !ok {
			stale = append(stale, m)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 {
		t.Errorf("metrics not documented in docs/sre.md: %v", missing)
	}
	if len(stale) > 0 {
		t.Errorf("docs/sre.md documents metrics the code does not declare: %v", stale)
	}
}
