package chaos

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(removeBinary{m}, testenv.GoleakIgnores()...)
}

// removeBinary removes the partners binary the suite built once the tests
// are done (it was left in a temporary directory per run).
type removeBinary struct{ m *testing.M }

func (r removeBinary) Run() int {
	code := r.m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	return code
}

// TestFaults runs the fault suite with the profile PARTNERS_CHAOS_PROFILE
// (default bounded; make chaos: long): every scenario for the profile's
// rounds, the cluster's scenarios and the single broker's in two parallel
// lanes. It prints the report table, writes it as JSON under
// .local/chaos/, and fails on any lost delivery, repeat beyond its bound,
// DLQ mismatch, ROI cent or registry difference.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs real servers and the partners binary (make test, make chaos)")
	}
	name := os.Getenv("PARTNERS_CHAOS_PROFILE")
	if name == "" {
		name = "bounded"
	}
	prof, err := loadProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	// PARTNERS_CHAOS_SCENARIOS=a,b runs only those (while working on one).
	if only := os.Getenv("PARTNERS_CHAOS_SCENARIOS"); only != "" {
		prof.Only = strings.Split(only, ",")
		for _, s := range prof.Only {
			if findScenario(s) == nil {
				t.Fatalf("PARTNERS_CHAOS_SCENARIOS: unknown scenario %q (known: %s)", s, strings.Join(scenarioNames(), ", "))
			}
		}
	}
	st := &stack{cluster: testenv.KafkaCluster(t), sharedCH: testenv.ClickHouseAddr()}
	if !testenv.RealKafka() {
		t.Skip("PARTNERS_TEST_KAFKA unset: the fault suite runs with the local stack (make test)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cfg := config.Default()
	cfg.ClickHouse.Addr = []string{st.sharedCH}
	conn, err := chdb.Open(ctx, cfg.ClickHouse)
	cancel()
	if err != nil {
		t.Fatalf("ClickHouse at %s: %v", st.sharedCH, err)
	}
	conn.Close()
	root := testenv.RepoRoot(t)
	rp := &report{Profile: prof.Name, Started: time.Now().UTC(), RepeatRule: repeatRule}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		rp.Commit = strings.TrimSpace(string(out))
	}
	st.dir = filepath.Join(root, ".local", "chaos", "run-"+rp.Started.Format("20060102T150405Z"))
	partnersBinary(t)
	st.single = startSingleKafka(t, filepath.Join(st.dir, "kafka-single"))

	var mu sync.Mutex
	add := func(r *result) {
		mu.Lock()
		rp.Results = append(rp.Results, r)
		mu.Unlock()
	}
	t.Run("lanes", func(t *testing.T) {
		for _, lane := range []string{"cluster", "single"} {
			t.Run(lane, func(t *testing.T) {
				t.Parallel()
				for round := 1; round <= prof.Rounds; round++ {
					for _, sc := range scenarios {
						if sc.kafka != lane || (len(prof.Only) > 0 && !contains(prof.Only, sc.name)) {
							continue
						}
						if sc.pending != "" && round > 1 {
							continue
						}
						t.Run(sc.name, func(t *testing.T) {
							r := &result{Scenario: sc.name, Round: round, RecoverSeconds: -1}
							defer func() {
								if t.Failed() && len(r.Failures) == 0 {
									r.Failures = []string{"the scenario stopped: see the test log (processes' logs in " + r.Dir + ")"}
								}
								add(r)
							}()
							runScenario(t, prof, st, sc, round, r)
							if len(r.Failures) == 0 && r.Pending == "" && r.Dir != "" {
								// the processes' logs are kept for failed scenarios only
								t.Cleanup(func() { _ = os.RemoveAll(r.Dir) })
								r.Dir = ""
							}
							for _, f := range r.Failures {
								t.Errorf("%s", f)
							}
							if r.Pending != "" {
								t.Logf("pending: %s", r.Pending)
							}
						})
					}
				}
			})
		}
	})
	for _, e := range waitDrops() {
		t.Logf("%s", e)
	}
	rp.Seconds = time.Since(rp.Started).Seconds()
	pruneRuns(filepath.Join(root, ".local", "chaos"), 5)
	path, err := rp.write(filepath.Join(root, ".local", "chaos"))
	if err != nil {
		t.Error(err)
	}
	var b strings.Builder
	rp.table(&b)
	for _, l := range lines(b.String()) {
		t.Logf("chaos | %s", l)
	}
	t.Logf("chaos | profile %s, %d scenario rounds in %.0f s; report %s; process logs under %s", prof.Name, len(rp.Results), rp.Seconds, path, st.dir)
}

// pruneRuns keeps the newest keep run directories (and reports) under dir.
func pruneRuns(dir string, keep int) {
	for _, pattern := range []string{"run-*", "report-*-2*.json"} {
		old, _ := filepath.Glob(filepath.Join(dir, pattern))
		sort.Strings(old) // names embed the UTC start time
		for len(old) > keep {
			_ = os.RemoveAll(old[0])
			old = old[1:]
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
