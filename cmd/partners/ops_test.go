package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/testenv"
)

// TestEdgeServesOpsEndpoints: `partners edge` owns no API, but like every
// process it must answer probes and be scraped (deploy/k8s probes it).
func TestEdgeServesOpsEndpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	prefix := "ops" + testenv.RandomID() + "."
	testenv.CleanupTopics(t, prefix)
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(bin, "--config", "../../config/partners-engine.yaml", "edge")
	cmd.Env = append(os.Environ(),
		"PARTNERS_KAFKA_BROKERS="+strings.Join(testenv.Brokers(t), ","),
		"PARTNERS_TOPIC_PREFIX="+prefix,
		"PARTNERS_ADMIN_LISTEN="+admin,
		fmt.Sprintf("PARTNERS_EXTAUTHZ_LISTEN=127.0.0.1:%d", testenv.FreePort(t)),
		fmt.Sprintf("PARTNERS_XDS_LISTEN=127.0.0.1:%d", testenv.FreePort(t)),
		"PARTNERS_ADMIN_TOKEN=ops-test-admin-token-"+testenv.RandomID(),
		"PARTNERS_KEY_PEPPER=ops-test-pepper-0123456789abcdef",
	)
	out := &testenv.LogBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("partners edge exited with %v on SIGTERM:\n%s", err, out)
		}
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if code, _ := get("/readyz"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partners edge never ready on %s:\n%s", admin, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "partners_edge_check_duration_seconds") {
		t.Fatalf("/metrics: %d, edge metrics missing", code)
	}
	if code, body := get("/api/v1/tenants"); code != 404 || !strings.Contains(body, "no such API route") {
		t.Fatalf("the edge must not serve the admin API: %d %s", code, body)
	}
}
