// Command bench is `make bench`: it runs every benchmark of the module
// (`go test -run '^$' -bench . -p 1`, one package at a time so suites do not
// disturb each other) against the local servers, gathers the figures the
// benchmarks report through internal/benchtest, and prints each beside the
// baseline measured in the same run with their ratio, in one aligned table,
// then writes bench-results.json. See bench/README.md.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/internal/benchtest"
)

func main() {
	out := flag.String("json", "bench-results.json", "write the results here")
	run := flag.String("bench", ".", "benchmarks to run (go test -bench)")
	pkgs := flag.String("pkgs", "./...", "packages to run, space-separated")
	quick := flag.Bool("quick", false, "smaller sizes (PARTNERS_BENCH_QUICK=1)")
	flag.Parse()
	if err := bench(*out, *run, *pkgs, *quick, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Result is bench-results.json.
type Result struct {
	At      time.Time          `json:"at"`
	Brokers string             `json:"brokers"`
	Figures []benchtest.Record `json:"figures"`
	Failed  bool               `json:"failed,omitempty"`
}

func bench(outPath, run, pkgs string, quick bool, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "partners-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	figs := filepath.Join(dir, "figures.jsonl")
	args := append([]string{"test", "-run", "^$", "-bench", run, "-p", "1", "-count", "1", "-timeout", "90m"}, strings.Fields(pkgs)...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), benchtest.OutEnv+"="+figs)
	if quick {
		cmd.Env = append(cmd.Env, benchtest.QuickEnv+"=1")
	}
	cmd.Stdout, cmd.Stderr = stderr, stderr // go test's own lines are progress
	runErr := cmd.Run()

	res := Result{At: time.Now().UTC(), Brokers: os.Getenv("PARTNERS_TEST_KAFKA"), Failed: runErr != nil}
	recs, err := readFigures(figs)
	if err != nil {
		return err
	}
	res.Failed = runErr != nil
	res.Figures = recs
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, Table(recs))
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(outPath, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%d figures; wrote %s\n", len(recs), outPath)
	if runErr != nil {
		return fmt.Errorf("go test: %w (the table holds the figures gathered before the failure)", runErr)
	}
	if len(recs) == 0 {
		return errors.New("no figures reported")
	}
	return nil
}

func readFigures(path string) ([]benchtest.Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []benchtest.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r benchtest.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// Table lays the figures out in aligned columns: text left, numbers right,
// numbers in fixed notation with thousands separators.
func Table(recs []benchtest.Record) string {
	header := []string{"suite", "figure", "value", "unit", "baseline (same run)", "baseline value", "ratio"}
	right := []bool{false, false, true, false, false, true, true}
	rows := [][]string{header}
	for _, r := range recs {
		base, bval, ratio := "—", "—", "—"
		if r.Baseline != "" {
			base, bval, ratio = r.Baseline, Num(r.BaselineValue), fmt.Sprintf("%.3f", r.Ratio())
		}
		rows = append(rows, []string{r.Suite, r.Name, Num(r.Value), r.Unit, base, bval, ratio})
	}
	width := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for n, row := range rows {
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if right[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
			if i < len(row)-1 {
				b.WriteString("  ")
			}
		}
		b.WriteString("\n")
		if n == 0 {
			for i := range header {
				b.WriteString(strings.Repeat("-", width[i]))
				if i < len(header)-1 {
					b.WriteString("  ")
				}
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Num formats v in fixed notation with about four significant digits:
// 132,200 · 443.1 · 18.27 · 0.0123 — never 1.322e+05.
func Num(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 10_000:
		return group(fmt.Sprintf("%.0f", v))
	case a >= 1_000:
		return group(fmt.Sprintf("%.0f", v))
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a == 0:
		return "0"
	}
	decimals := 3
	for x := a; x < 0.1 && decimals < 12; x *= 10 {
		decimals++
	}
	return fmt.Sprintf("%.*f", decimals, v)
}

func group(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
