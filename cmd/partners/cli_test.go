package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/partners-engine/partners-engine/internal/testenv"
)

// runCode runs the binary in dir (the test's directory when ""), without a
// --config flag unless args carry one, and returns its combined output and
// exit code.
func runCode(t *testing.T, bin, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode()
	default:
		t.Fatalf("run %v: %v", args, err)
		return "", -1
	}
}

// TestExitCodes: the convention `partners --help` documents, for what the
// CLI decides without a server (usage: 2) and for an unreachable API (1).
func TestExitCodes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	help, code := runCode(t, bin, "", os.Environ(), "--help")
	if code != 0 || !strings.Contains(help, "Exit codes:") || !strings.Contains(help, "2  usage") || !strings.Contains(help, "3  refused") {
		t.Fatalf("partners --help (exit %d) does not document the exit codes:\n%s", code, help)
	}
	env := append(os.Environ(), "PARTNERS_ADMIN_URL=http://127.0.0.1:1") // nothing listens on port 1
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--bogus"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"no-such-command"}, exitUsage, "unknown command"},
		{[]string{"tenants", "create", "--name", "x"}, exitUsage, `required flag(s) "tier", "webhook-url" not set`},
		{[]string{"tenants", "get"}, exitUsage, "accepts 1 arg"},
		{[]string{"tenants", "list", "--format", "xml"}, exitUsage, `--format: want table or json, got "xml"`},
		{[]string{"roi", "--window", "x"}, exitUsage, `invalid argument "x" for "--window"`},
		{[]string{"roi", "--model", "bogus"}, exitUsage, "position_based, or all, got \"bogus\""},
		{[]string{"events", "publish", "--type", "no.such.type"}, exitUsage, `"no.such.type" is not in partner.webhooks.event_types`},
		{[]string{"events", "publish", "--type", "order.created", "--data", "{bad"}, exitUsage, "--data: not valid JSON at byte 2"},
		{[]string{"events", "publish", "--type", "order.created", "--data", `{"a":1`}, exitUsage, "--data: not valid JSON: it ends early"},
		{[]string{"events", "publish", "--type", "order.created", "--data", "[1,2]"}, exitUsage, "--data: must be a JSON object"},
		{[]string{"events", "publish", "--type", "order.created", "--data", `{"a":1} {}`}, exitUsage, "--data: not one JSON object"},
		{[]string{"--config", "no/such/file.yaml", "tenants", "list"}, exitUsage, "no/such/file.yaml"},
		{[]string{"tenants", "list"}, exitFailure, "admin API unreachable"},
		{[]string{"roi", "--model", "all"}, exitFailure, "admin API unreachable"},
	} {
		out, code := runCode(t, bin, "", env, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("partners %s: exit %d, want %d with %q:\n%s", strings.Join(c.args, " "), code, c.code, c.want, out)
		}
		if strings.Contains(out, "MarshalJSON") || strings.Contains(out, "json.RawMessage") {
			t.Errorf("partners %s shows a Go-internal message:\n%s", strings.Join(c.args, " "), out)
		}
	}
}

// TestCommandsOutsideTheCheckout is the first hour outside the repository
// root: client commands work from any directory (the nearest parent's
// config/, or the configuration built into the binary with the admin API from
// PARTNERS_ADMIN_URL/TOKEN); the API's refusals exit 3 and its input
// refusals 2; the processes refuse to start without a configuration file.
func TestCommandsOutsideTheCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testenv.ClickHouse(t, testenv.Config(t))
	bin := buildBinary(t) // in a temp dir: no config/ beside it
	env := devEnv(t)
	stop, _ := startDev(t, bin, env)
	defer stop()

	created, err := run(t, bin, env, "tenants", "create", "--name", "Initech", "--tier", "standard", "--webhook-url", "http://127.0.0.1:9999/hook")
	if err != nil {
		t.Fatalf("tenants create: %v\n%s", err, created)
	}
	var c struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(created), &c); err != nil || c.ID == "" {
		t.Fatalf("create output: %s", created)
	}

	// A subdirectory of the checkout: the nearest parent's config/.
	wd, _ := os.Getwd()
	sub := filepath.Join(wd, "internal", "demo")
	if out, code := runCode(t, bin, sub, env, "tenants", "list"); code != 0 || !strings.Contains(out, c.ID) {
		t.Fatalf("tenants list in %s: exit %d:\n%s", sub, code, out)
	}
	// Outside any checkout, with only the admin API's address and token.
	outside := t.TempDir()
	if out, code := runCode(t, bin, outside, env, "tenants", "list"); code != 0 || !strings.Contains(out, "Initech") {
		t.Fatalf("tenants list in %s: exit %d:\n%s", outside, code, out)
	}
	if out, code := runCode(t, bin, outside, env, "tenants", "get", c.ID); code != 0 || !strings.Contains(out, `"name": "Initech"`) {
		t.Fatalf("tenants get in %s: exit %d:\n%s", outside, code, out)
	}
	if out, code := runCode(t, bin, outside, env, "roi", "--model", "all"); code != 0 || !strings.Contains(out, "PARTNER") {
		t.Fatalf("roi in %s: exit %d:\n%s", outside, code, out)
	}
	// The API's answers, by the convention.
	for _, x := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tenants", "get", "tn_0000000000000000"}, exitRefused, "404"},
		{[]string{"tenants", "create", "--name", "Initech", "--tier", "standard", "--webhook-url", "http://127.0.0.1:9999/hook"}, exitRefused, "409"},
		{[]string{"tenants", "create", "--name", "Hooli", "--tier", "gold", "--webhook-url", "http://127.0.0.1:9999/hook"}, exitUsage, "tier"},
	} {
		if out, code := runCode(t, bin, outside, env, x.args...); code != x.code || !strings.Contains(out, x.want) {
			t.Errorf("partners %s: exit %d, want %d with %q:\n%s", strings.Join(x.args, " "), code, x.code, x.want, out)
		}
	}
	bad := append(append([]string{}, env...), "PARTNERS_ADMIN_TOKEN=not-the-token")
	if out, code := runCode(t, bin, outside, bad, "tenants", "list"); code != exitRefused || !strings.Contains(out, "401") {
		t.Errorf("tenants list with a wrong token: exit %d, want %d with 401:\n%s", code, exitRefused, out)
	}
	// A valid event from outside: published on the dev broker.
	out, code := runCode(t, bin, outside, env, "events", "publish", "--type", "order.created", "--data", `{"order_id":"o1"}`)
	var pub struct {
		Topic  string `json:"topic"`
		Offset *int64 `json:"offset"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &pub) != nil || pub.Offset == nil {
		t.Fatalf("events publish in %s: exit %d:\n%s", outside, code, out)
	}
	// The processes need a configuration file.
	if out, code := runCode(t, bin, outside, env, "webhooks"); code != exitUsage || !strings.Contains(out, "no configuration") || !strings.Contains(out, "PARTNERS_CONFIG") {
		t.Errorf("partners webhooks without a configuration: exit %d:\n%s", code, out)
	}
}
