package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one scenario round of the report.
type result struct {
	Scenario       string         `json:"scenario"`
	Round          int            `json:"round"`
	Kafka          string         `json:"kafka"`
	Fault          string         `json:"fault"`
	Pending        string         `json:"pending,omitempty"`
	Events         int            `json:"events_produced"`
	Conversions    int            `json:"conversions_produced"`
	Costs          int            `json:"costs_produced"`
	Expected       int            `json:"deliveries_expected"`
	Made           int            `json:"deliveries_made"`
	Lost           int            `json:"deliveries_lost"`
	LostSample     []string       `json:"lost_sample,omitempty"`
	Repeated       int            `json:"repeated_after_success"`        // deliveries made again after a 2xx
	RepeatRequests int            `json:"repeat_requests_after_success"` // the requests that made them again
	RepeatedBy     map[string]int `json:"repeated_by_receiver,omitempty"`
	RepeatSample   []string       `json:"repeat_sample,omitempty"` // seconds since the load started → status
	FaultAt        float64        `json:"fault_at_seconds"`        // since the load started
	RepeatBound    int            `json:"repeat_bound"`
	RedoWindows    []string       `json:"redo_windows,omitempty"` // seconds since the load started
	// Repeated deliveries whose first 2xx fell in no redo window (the
	// bound counts deliveries, so these can pass when others in a window
	// were not repeated): the diagnosis when the bound fails.
	RepeatedOutside     int                `json:"repeated_outside_windows"`
	RepeatOutsideSample []string           `json:"repeat_outside_sample,omitempty"`
	TxnAborts           int                `json:"webhooks_transactions_aborted"` // logged by the processor; each redoes unfinished records
	DLQExpected         int                `json:"dlq_expected"`
	DLQGot              int                `json:"dlq_got"`
	DLQUnexpected       int                `json:"dlq_unexpected"`
	LogMissing          int                `json:"delivery_log_missing"`
	BadSignatures       int                `json:"bad_signatures"`
	BadSignatureSample  []string           `json:"bad_signature_sample,omitempty"`
	BodyChanged         int                `json:"bodies_changed_under_one_id"`
	ChecksAllowed       int                `json:"edge_checks_allowed"`
	ChecksDenied        int                `json:"edge_checks_denied"`
	CheckErrors         int                `json:"edge_check_errors"`
	Touchpoints         int                `json:"touchpoints_recorded"`
	ROICells            int                `json:"roi_cells"`
	ROIEqual            bool               `json:"roi_equal"`
	ROIDiffs            []string           `json:"roi_diffs,omitempty"`
	ROIError            string             `json:"roi_error,omitempty"`
	RegistryEqual       bool               `json:"registry_equal"`
	RegistryDiffs       []string           `json:"registry_diffs,omitempty"`
	Churn               map[string]int     `json:"registry_changes"`
	FaultSeconds        float64            `json:"fault_seconds"`
	KafkaDownSeconds    float64            `json:"kafka_unavailable_seconds,omitempty"`
	RecoverSeconds      float64            `json:"recover_seconds"` // fault over → caught up; -1: never
	DeploySeconds       float64            `json:"deploy_seconds"`
	LoadSeconds         float64            `json:"load_seconds"`
	SettleSeconds       float64            `json:"settle_seconds"`
	RegistrySeconds     float64            `json:"registry_check_seconds"`
	Counters            map[string]float64 `json:"metrics_counters,omitempty"`
	Gauges              map[string]float64 `json:"metrics_gauges_max,omitempty"`
	Logs                map[string]int     `json:"warnings_logged,omitempty"`
	NotReady            map[string]string  `json:"readyz_not_ready_samples,omitempty"` // role -> not-200 / samples, once a second
	SkippedOverrides    []string           `json:"config_overrides_skipped,omitempty"`
	RateLimit           *rlSummary         `json:"rate_limit,omitempty"`
	// ProcessExits are the exits a process made by itself (not the
	// fault's SIGKILL), with its last log line; the suite restarted each, as
	// a supervisor would.
	ProcessExits map[string][]string `json:"process_exits,omitempty"`
	// MustNotExit: an exit of a process by itself fails the scenario.
	MustNotExit bool     `json:"must_not_exit,omitempty"`
	Notes       []string `json:"notes,omitempty"`
	Failures    []string `json:"failures,omitempty"`
	Dir         string   `json:"logs_dir,omitempty"`
}

func (r *result) fill(ev evaluation) {
	r.Events, r.Conversions, r.Costs = ev.events, ev.conversions, ev.costs
	r.Expected, r.Made, r.Lost, r.LostSample = ev.expected, ev.made, ev.lost, ev.lostSample
	r.Repeated, r.RepeatRequests, r.RepeatedBy = ev.repeated, ev.repeatRequests, ev.repeatedBy
	r.DLQExpected, r.DLQGot, r.DLQUnexpected = ev.dlqExpected, ev.dlqGot, ev.dlqUnexpected
	r.LogMissing, r.BadSignatures, r.BodyChanged = ev.logMissing, ev.badSigs, ev.bodyChanged
	r.BadSignatureSample = ev.badSigSample
	r.ChecksAllowed, r.ChecksDenied, r.CheckErrors, r.Touchpoints = ev.checksOK, ev.denied, ev.checkErrs, ev.touches
	r.ROICells, r.ROIDiffs = ev.roiCells, ev.roiDiffs
	if len(r.ROIDiffs) > 10 {
		r.ROIDiffs = append(r.ROIDiffs[:10], fmt.Sprintf("… %d more", len(ev.roiDiffs)-10))
	}
	if ev.roiErr != nil {
		r.ROIError = ev.roiErr.Error()
	}
	r.ROIEqual = ev.roiErr == nil && len(ev.roiDiffs) == 0
	r.Churn = ev.churn
	if ev.logErr != nil {
		r.Failures = append(r.Failures, "delivery log unreadable: "+ev.logErr.Error())
	}
}

// judge lists what fails the suite.
func (r *result) judge() {
	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if r.Lost > 0 {
		fail("%d deliveries lost (neither delivered nor dead-lettered as expected), e.g. %v", r.Lost, r.LostSample)
	}
	if r.Repeated > r.RepeatBound {
		fail("%d deliveries repeated after success, bound %d; %d of them first succeeded outside the redo windows %v, e.g. %v",
			r.Repeated, r.RepeatBound, r.RepeatedOutside, r.RedoWindows, r.RepeatOutsideSample)
	}
	if r.DLQGot != r.DLQExpected || r.DLQUnexpected > 0 {
		fail("DLQ: %d entries, want %d (%d of them for deliveries that should have been made)", r.DLQGot, r.DLQExpected, r.DLQUnexpected)
	}
	if r.LogMissing > 0 {
		fail("%d delivered deliveries missing from the ClickHouse delivery log", r.LogMissing)
	}
	if r.BadSignatures > 0 || r.BodyChanged > 0 {
		fail("%d requests failed signature verification, %d webhook-ids carried two bodies", r.BadSignatures, r.BodyChanged)
		for _, s := range r.BadSignatureSample {
			fail("bad signature: %s", s)
		}
	}
	if r.ChecksDenied > 0 {
		fail("the edge refused %d partner calls with valid keys", r.ChecksDenied)
	}
	if lost := r.ChecksAllowed - r.Touchpoints; lost > 0 {
		// The edge spools what Kafka cannot take, however long it is
		// down, and replays it: a missing touchpoint is a loss.
		fail("the edge allowed %d calls but recorded %d touchpoints (Kafka unavailable %.0f s)", r.ChecksAllowed, r.Touchpoints, r.KafkaDownSeconds)
	}
	if !r.ROIEqual {
		fail("ROI differs from the oracle: %s %v", r.ROIError, r.ROIDiffs)
	}
	if !r.RegistryEqual {
		fail("registry diverged: %v", r.RegistryDiffs)
	}
	if r.RecoverSeconds < 0 {
		fail("did not catch up within the settle bound")
	}
	if r.MustNotExit {
		for p, exits := range r.ProcessExits {
			fail("%s exited by itself %d times (it must ride this fault out without a supervisor), first: %s", p, len(exits), exits[0])
		}
	}
	if r.RateLimit != nil {
		for _, p := range r.RateLimit.Problems {
			fail("rate limit: %s", p)
		}
	}
}

// producerRetryWindow is how long the platform's producers retry a record
// (internal/kafka Cluster.Opts: kgo.RetryTimeout).
const producerRetryWindow = 30 * time.Second

// report is one run.
type report struct {
	Profile    string    `json:"profile"`
	Started    time.Time `json:"started"`
	Seconds    float64   `json:"seconds"`
	Commit     string    `json:"commit,omitempty"`
	Results    []*result `json:"results"`
	RepeatRule string    `json:"repeat_bound_rule"`
}

const repeatRule = "a delivery may be made again after a 2xx only if it succeeded inside a redo window: from repeat_window before a fault that hits the delivery path (a webhooks process, or the broker under it) until repeat_window after the faulted component is back, or around a transaction the webhooks processor logs as aborted, from when the oldest record it had not committed was polled (the log's uncommitted_since) or repeat_window before the abort, whichever is earlier, until repeat_window after it (attempts in flight at the abort still reach their partners), or within repeat_window before a webhooks process exits by itself (either way it re-polls and redoes unfinished records); the bound is the number of such deliveries, and more deliveries repeated than that fails the suite (each repeated delivery counts once, however many requests repeated it: repeat_requests_after_success)"

func yn(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// table writes the aligned table of the report.
func (rp *report) table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "scenario\tround\tevents\tdeliv exp\tmade\tlost\trepeated (bound)\ttxn aborts\tDLQ exp/got\tlog miss\ttouches\tROI ok\tregistry ok\trecover s\texits\tresult\t")
	for _, r := range rp.Results {
		if r.Pending != "" {
			fmt.Fprintf(tw, "%s\t%d\t—\t—\t—\t—\t—\t—\t—\t—\t—\t—\t—\t—\t—\tPENDING\t\n", r.Scenario, r.Round)
			continue
		}
		rec := "—"
		if r.RecoverSeconds >= 0 {
			rec = fmt.Sprintf("%.1f", r.RecoverSeconds)
		}
		verdict := "pass"
		if len(r.Failures) > 0 {
			verdict = "FAIL"
		}
		exits := 0
		for _, e := range r.ProcessExits {
			exits += len(e)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d (%d)\t%d\t%d/%d\t%d\t%d/%d\t%s\t%s\t%s\t%d\t%s\t\n",
			r.Scenario, r.Round, r.Events, r.Expected, r.Made, r.Lost, r.Repeated, r.RepeatBound, r.TxnAborts,
			r.DLQExpected, r.DLQGot, r.LogMissing, r.Touchpoints, r.ChecksAllowed, yn(r.ROIEqual), yn(r.RegistryEqual), rec, exits, verdict)
	}
	_ = tw.Flush()
	for _, r := range rp.Results {
		if r.Pending != "" {
			fmt.Fprintf(w, "%s: pending — %s\n", r.Scenario, r.Pending)
		}
		if rl := r.RateLimit; rl != nil {
			var parts []string
			for _, k := range sortedKeys(rl.DuringDown) {
				parts = append(parts, fmt.Sprintf("%s %d", k, rl.DuringDown[k]))
			}
			fmt.Fprintf(w, "%s round %d: partner calls while Redis was down: %s; counted again %.1fs after it returned\n",
				r.Scenario, r.Round, strings.Join(parts, ", "), rl.RecoverSec)
		}
		for _, f := range r.Failures {
			fmt.Fprintf(w, "%s round %d: %s\n", r.Scenario, r.Round, f)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "%s round %d: note: %s\n", r.Scenario, r.Round, n)
		}
		for p, exits := range r.ProcessExits {
			// one line per distinct exit, with its count (a process that
			// cannot start while Kafka is down exits once a second)
			var order []string
			count := map[string]int{}
			for _, e := range exits {
				if count[e] == 0 {
					order = append(order, e)
				}
				count[e]++
			}
			for _, e := range order {
				fmt.Fprintf(w, "%s round %d: %s exited by itself ×%d (restarted): %s\n", r.Scenario, r.Round, p, count[e], e)
			}
		}
	}
}

// write saves the report as JSON under dir and returns the path.
func (rp *report) write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	sort.SliceStable(rp.Results, func(i, j int) bool {
		return scenarioIndex(rp.Results[i].Scenario) < scenarioIndex(rp.Results[j].Scenario) ||
			(rp.Results[i].Scenario == rp.Results[j].Scenario && rp.Results[i].Round < rp.Results[j].Round)
	})
	b, err := json.MarshalIndent(rp, "", "  ")
	if err != nil {
		return "", err
	}
	name := filepath.Join(dir, fmt.Sprintf("report-%s-%s.json", rp.Profile, rp.Started.UTC().Format("20060102T150405Z")))
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return "", err
	}
	latest := filepath.Join(dir, "report-"+rp.Profile+"-latest.json")
	_ = os.WriteFile(latest, b, 0o644)
	return name, nil
}

func scenarioIndex(name string) int {
	for i, s := range scenarios {
		if s.name == name {
			return i
		}
	}
	return len(scenarios)
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func lines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }
