// Command benchharness is `make bench`: it runs every component's Bench
// function against the local servers, prints each figure beside the baseline
// measured in the same run with their ratio, and writes a JSON summary.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/partners-engine/partners-engine/internal/benchrow"
)

type suite struct {
	name string
	run  func(context.Context, benchrow.Env) ([]benchrow.Row, error)
}

func main() {
	out := flag.String("json", "bench-results.json", "write the results here")
	only := flag.String("only", "", "run only suites whose name contains this")
	quick := flag.Bool("quick", false, "smaller sizes")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	env := benchrow.Env{ClickHouseAddr: envOr("PARTNERS_TEST_CLICKHOUSE", "127.0.0.1:9000"), Quick: *quick,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if b := envOr("PARTNERS_TEST_KAFKA", "127.0.0.1:9092"); b != "" {
		env.Brokers = strings.Split(b, ",")
	}
	type result struct {
		Suite   string         `json:"suite"`
		Rows    []benchrow.Row `json:"rows"`
		Error   string         `json:"error,omitempty"`
		Seconds float64        `json:"seconds"`
	}
	summary := struct {
		At      time.Time `json:"at"`
		Brokers []string  `json:"brokers"`
		Results []result  `json:"results"`
	}{At: time.Now().UTC(), Brokers: env.Brokers}
	failed := false
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "suite\tfigure\tvalue\tunit\tbaseline (same run)\tbaseline value\tratio\t")
	for _, s := range suites() {
		if *only != "" && !strings.Contains(s.name, *only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s …\n", s.name)
		start := time.Now()
		rows, err := s.run(ctx, env)
		r := result{Suite: s.name, Rows: rows, Seconds: time.Since(start).Seconds()}
		if err != nil {
			r.Error = err.Error()
			failed = true
			fmt.Fprintf(os.Stderr, "bench: %s failed: %v\n", s.name, err)
		}
		summary.Results = append(summary.Results, r)
		for _, row := range rows {
			ratio := "—"
			if row.BaselineValue != 0 {
				ratio = fmt.Sprintf("%.3f", row.Ratio())
			}
			base, bval := row.Baseline, "—"
			if base == "" {
				base = "—"
			} else {
				bval = fmt.Sprintf("%.4g", row.BaselineValue)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.4g\t%s\t%s\t%s\t%s\t\n", s.name, row.Name, row.Value, row.Unit, base, bval, ratio)
		}
		_ = tw.Flush()
	}
	b, _ := json.MarshalIndent(summary, "", "  ")
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("\nwrote %s\n", *out)
	if failed {
		os.Exit(1)
	}
}

func envOr(k, d string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return d
}
