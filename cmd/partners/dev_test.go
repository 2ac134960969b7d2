package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

// buildBinary builds bin/partners into a temp dir once per test binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "partners")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	return bin
}

// devEnv is the environment of a `partners dev` under test: its own ports,
// embedded-broker data dir and ClickHouse database.
func devEnv(t *testing.T) []string {
	dataDir := t.TempDir()
	db := "partners_test_" + testenv.RandomID()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := config.Default().ClickHouse
		c.Addr, c.Database = []string{testenv.ClickHouseAddr()}, db
		_ = chdb.DropDatabase(ctx, c)
	})
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	return append(os.Environ(),
		"PARTNERS_KAFKA_BROKERS=",
		"PARTNERS_KAFKA_DATA_DIR="+dataDir,
		fmt.Sprintf("PARTNERS_KAFKA_EMBEDDED_PORT=%d", testenv.FreePort(t)),
		"PARTNERS_CLICKHOUSE_ADDR="+testenv.ClickHouseAddr(),
		"PARTNERS_CLICKHOUSE_DB="+db,
		"PARTNERS_ADMIN_LISTEN="+admin,
		"PARTNERS_ADMIN_URL=http://"+admin,
		fmt.Sprintf("PARTNERS_XDS_LISTEN=127.0.0.1:%d", testenv.FreePort(t)),
		fmt.Sprintf("PARTNERS_EXTAUTHZ_LISTEN=127.0.0.1:%d", testenv.FreePort(t)),
		"PARTNERS_ADMIN_TOKEN=dev-test-admin-token",
	)
}

func startDev(t *testing.T, bin string, env []string) (stop func(), out *testenv.LogBuffer) {
	t.Helper()
	out = &testenv.LogBuffer{}
	cmd := exec.Command(bin, "--config", "../../config/partners-engine.yaml", "dev")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	admin := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PARTNERS_ADMIN_URL="); ok {
			admin = v
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("partners dev not ready after 90s:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("partners dev exited with %v on SIGINT:\n%s", err, out)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("partners dev did not stop within 30s of SIGINT")
		}
	}, out
}

func run(t *testing.T, bin string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--config", "../../config/partners-engine.yaml"}, args...)...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestDevKeepsTenantsAcrossRestart is the README's quick start: partners dev,
// tenants create, tenants list, restart, the tenant is still there.
func TestDevKeepsTenantsAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testenv.ClickHouse(t, testenv.Config(t)) // skips or fails clearly without ClickHouse
	bin := buildBinary(t)
	env := devEnv(t)
	stop, out := startDev(t, bin, env)
	// /readyz answers while the banner is still being written.
	testenv.Eventually(t, 10*time.Second, "the dev banner with its quick-start commands", func() bool {
		return strings.Contains(out.String(), "partners-engine dev is up") && strings.Contains(out.String(), "tenants create")
	})
	created, err := run(t, bin, env, "tenants", "create", "--name", "Acme", "--tier", "sandbox", "--webhook-url", "http://127.0.0.1:9999/hook")
	if err != nil {
		t.Fatalf("tenants create: %v\n%s", err, created)
	}
	var c struct{ ID, APIKey, WebhookSecret string }
	var raw map[string]any
	if err := json.Unmarshal([]byte(created), &raw); err != nil {
		t.Fatalf("create output is not JSON: %s", created)
	}
	c.ID, _ = raw["id"].(string)
	c.APIKey, _ = raw["api_key"].(string)
	c.WebhookSecret, _ = raw["webhook_secret"].(string)
	if c.ID == "" || c.APIKey == "" || c.WebhookSecret == "" {
		t.Fatalf("create output lacks id/api_key/webhook_secret: %s", created)
	}
	if dup, err := run(t, bin, env, "tenants", "create", "--name", "Acme", "--tier", "sandbox", "--webhook-url", "http://127.0.0.1:9999/hook"); err == nil || !strings.Contains(dup, "409") {
		t.Fatalf("duplicate create: want a 409 error, got %v: %s", err, dup)
	}
	for _, step := range []struct {
		args []string
		want string
	}{
		{[]string{"tenants", "get", c.ID}, `"name": "Acme"`},
		{[]string{"tenants", "suspend", c.ID}, `"status": "suspended"`},
		{[]string{"tenants", "activate", c.ID}, `"status": "active"`},
		{[]string{"tenants", "rotate-key", c.ID}, `"api_key": "pk_sbx_`},
		{[]string{"tenants", "rotate-secret", c.ID}, `"webhook_secret": "whsec_`},
	} {
		if got, err := run(t, bin, env, step.args...); err != nil || !strings.Contains(got, step.want) {
			t.Fatalf("%v: %v\n%s", step.args, err, got)
		}
	}
	if got, err := run(t, bin, env, "tenants", "get", "tn_0000000000000000"); err == nil || !strings.Contains(got, "404 Not Found") {
		t.Fatalf("get of an unknown tenant: want a 404 error, got %v: %s", err, got)
	}
	stop()
	for _, secret := range []string{c.APIKey, c.WebhookSecret} {
		if strings.Contains(out.String(), secret) {
			t.Fatal("partners dev logged a credential")
		}
	}

	stop2, _ := startDev(t, bin, env)
	defer stop2()
	list, err := run(t, bin, env, "tenants", "list")
	if err != nil || !strings.Contains(list, c.ID) || !strings.Contains(list, "Acme") {
		t.Fatalf("after restart, tenants list lacks the tenant (%v):\n%s", err, list)
	}
}

func TestConfigCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	out, err := run(t, bin, os.Environ(), "config", "check")
	if err != nil || !strings.Contains(out, "valid") {
		t.Fatalf("config check of the shipped config: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("partner:\n  rate_limit:\n    default: {requests_per_minute: -1, burst_size: 10}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", bad, "config", "check")
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("want exit code 2, got %v", err)
	}
	if !strings.Contains(string(b), `partner.rate_limit.default.requests_per_minute: must be > 0 (got "-1")`) {
		t.Fatalf("error does not name the key and value:\n%s", b)
	}

	// The shipped config's development secrets: valid for dev only, and
	// said so; --for production exits 2; a component refuses to start.
	devEnv := append(os.Environ(), "PARTNERS_ADMIN_TOKEN=", "PARTNERS_KEY_PEPPER=")
	out, err = run(t, bin, devEnv, "config", "check")
	if err != nil || !strings.Contains(out, "valid for `partners dev` only") || !strings.Contains(out, "NOT valid for production") ||
		!strings.Contains(out, "admin.token: is the public development default") || !strings.Contains(out, "partner.keys.pepper: is the public development default") {
		t.Fatalf("config check must not call the dev defaults valid for production: %v\n%s", err, out)
	}
	if strings.Contains(out, config.DevAdminToken) || strings.Contains(out, config.DevPepper) {
		t.Fatalf("config check printed a secret:\n%s", out)
	}
	for _, args := range [][]string{{"config", "check", "--for", "production"}, {"config", "check", "--for", "webhooks"}, {"webhooks"}, {"control-plane"}, {"edge"}, {"attribution"}} {
		cmd := exec.Command(bin, append([]string{"--config", "../../config/partners-engine.yaml"}, args...)...)
		cmd.Env = append(devEnv, "PARTNERS_KAFKA_BROKERS=127.0.0.1:1")
		b, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(b), "admin.token: is the public development default") {
			t.Fatalf("%v with the dev defaults: want exit 2 naming admin.token, got %v:\n%s", args, err, b)
		}
	}
	prodEnv := append(os.Environ(), "PARTNERS_ADMIN_TOKEN=a-real-admin-token-0123456789", "PARTNERS_KEY_PEPPER=a-real-pepper-0123456789abcdef")
	if out, err := run(t, bin, prodEnv, "config", "check", "--for", "production"); err != nil || !strings.Contains(out, "valid for `partners dev` and every component") {
		t.Fatalf("config check --for production with real secrets: %v\n%s", err, out)
	}
}
