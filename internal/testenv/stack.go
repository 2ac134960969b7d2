package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The servers of the local stack beyond the single broker and ClickHouse
// (deploy/local/up.sh starts them all; make test exports where they are):
//
//	PARTNERS_TEST_KAFKA_CLUSTER        three-broker KRaft cluster, node n first at n-1
//	                                   (127.0.0.1:29091,127.0.0.1:29092,127.0.0.1:29093)
//	PARTNERS_TEST_KAFKA_SASL           SASL_PLAINTEXT listener of the single broker (127.0.0.1:9094)
//	PARTNERS_TEST_KAFKA_SASL_SSL       its SASL_SSL listener (127.0.0.1:9095)
//	PARTNERS_TEST_KAFKA_SASL_USER      SCRAM-SHA-512 user (default partners)
//	PARTNERS_TEST_KAFKA_SASL_PASSWORD  its password (default partners-test-secret)
//	PARTNERS_TEST_KAFKA_CA             CA file of the SASL_SSL listener (default: asked of
//	                                   deploy/local/kafka.sh ca, which finds the running broker's)
//	PARTNERS_TEST_CLICKHOUSE_CLUSTER   ClickHouse cluster "partners", node n first at n-1
//	                                   (127.0.0.1:29001,127.0.0.1:29002,127.0.0.1:29003)
//
// A helper whose variable is unset skips the test and says how to run it; one
// whose variable is set fails the test when the server does not answer, so
// nothing is silently skipped under make test.

// stackAddrs returns the comma-separated addresses in env, or skips the test
// when env is unset.
func stackAddrs(t testing.TB, env, what string) []string {
	t.Helper()
	v := strings.TrimSpace(os.Getenv(env))
	if v == "" {
		t.Skipf("%s unset: no %s to test against (make test starts one and sets it)", env, what)
	}
	var out []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// RepoRoot is the directory of the module's go.mod (tests run in their
// package's directory, somewhere below it).
func RepoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = os.ErrNotExist
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatalf("repository root (go.mod) not found above the test's directory: %v", rootErr)
	}
	return rootDir
}

// runScript runs deploy/local/<script> with args (and extra environment) and
// returns its combined output; a failure fails the test with that output.
func runScript(t testing.TB, timeout time.Duration, env []string, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(RepoRoot(t), "deploy", "local", script)}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/local/%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
	t.Logf("deploy/local/%s %s (%v): %s", script, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	return string(out)
}
