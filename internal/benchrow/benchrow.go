// Package benchrow is the shared shape of `make bench` results: every
// component's Bench function returns rows, each a figure next to a baseline
// measured in the same run, and the harness prints them with their ratio.
package benchrow

import "log/slog"

// Row is one measured figure and its same-run baseline.
type Row struct {
	Name          string  `json:"name"`
	Value         float64 `json:"value"`
	Unit          string  `json:"unit"`
	Baseline      string  `json:"baseline,omitempty"` // what the baseline measures; empty: none
	BaselineValue float64 `json:"baseline_value,omitempty"`
}

// Ratio is Value/BaselineValue, or 0 without a baseline.
func (r Row) Ratio() float64 {
	if r.BaselineValue == 0 {
		return 0
	}
	return r.Value / r.BaselineValue
}

// Env is what benchmarks run against.
type Env struct {
	Brokers        []string // real Kafka when set, else the benchmark starts kfake
	ClickHouseAddr string
	Log            *slog.Logger
	Quick          bool // smaller sizes (CI smoke run)
}
