package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/testenv"
)

// TestTwoControlPlaneProcessesRace is issue 13's lost-update report as the
// operator meets it: two `partners control-plane` processes on one real
// Kafka, 100 rounds of suspend/activate sent to one racing a PATCH sent to
// the other. Every 200 is applied (both processes read it back), every
// loser is a 409 problem naming the current version (body and ETag), and
// the version grows by exactly one per 200.
func TestTwoControlPlaneProcessesRace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two control planes")
	}
	if !testenv.RealKafka() {
		t.Skip("two processes need a shared broker (PARTNERS_TEST_KAFKA)")
	}
	cfg := testenv.Config(t)
	brokers, _ := testenv.Kafka(t, cfg) // the topics, deleted at cleanup
	bin := buildBinary(t)
	token := "race-admin-" + testenv.RandomID()
	env := append(os.Environ(),
		"PARTNERS_KAFKA_BROKERS="+strings.Join(brokers, ","),
		"PARTNERS_TOPIC_PREFIX="+cfg.Kafka.TopicPrefix,
		"PARTNERS_ADMIN_TOKEN="+token,
		"PARTNERS_KEY_PEPPER=race-pepper-"+testenv.RandomID(),
		"PARTNERS_LOG_LEVEL=warn",
	)
	a := startControlPlane(t, bin, env)
	b := startControlPlane(t, bin, env)

	do := func(method, url string, body any) (int, http.Header, map[string]any) {
		var rd io.Reader
		if body != nil {
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
		req, err := http.NewRequest(method, url, rd)
		if err != nil {
			t.Error(err)
			return 0, nil, nil
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			t.Error(err)
			return 0, nil, nil
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, resp.Header, m
	}
	code, _, created := do("POST", a+"/api/v1/tenants", map[string]any{"name": "Race " + testenv.RandomID(), "tier": "standard", "webhook_url": "https://partner.example/hook"})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, created)
	}
	id := created["id"].(string)
	version := int64(1)

	oks, conflicts := 0, 0
	for i := 0; i < 100; i++ {
		action, status := "suspend", "suspended"
		if i%2 == 1 {
			action, status = "activate", "active"
		}
		rpm := 100 + i
		type answer struct {
			code int
			h    http.Header
			body map[string]any
		}
		var ra, rb answer
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); ra.code, ra.h, ra.body = do("POST", a+"/api/v1/tenants/"+id+"/"+action, nil) }()
		go func() {
			defer wg.Done()
			rb.code, rb.h, rb.body = do("PATCH", b+"/api/v1/tenants/"+id, map[string]any{"rate_limit": map[string]int{"requests_per_minute": rpm, "burst_size": 10}})
		}()
		wg.Wait()
		won := 0
		for _, r := range []answer{ra, rb} {
			switch r.code {
			case http.StatusOK:
				won++
				oks++
			case http.StatusConflict:
				conflicts++
				cur, _ := r.body["current_version"].(float64)
				if int64(cur) <= version || r.h.Get("ETag") != fmt.Sprintf(`"%d"`, int64(cur)) ||
					!strings.HasPrefix(r.h.Get("Content-Type"), "application/problem+json") {
					t.Fatalf("round %d: 409 does not name the current version: %v (ETag %q)", i, r.body, r.h.Get("ETag"))
				}
			default:
				t.Fatalf("round %d: %d %v", i, r.code, r.body)
			}
		}
		if won == 0 {
			t.Fatalf("round %d: both writers lost", i)
		}
		version += int64(won)
		for _, base := range []string{a, b} {
			var got map[string]any
			testenv.Eventually(t, 20*time.Second, fmt.Sprintf("round %d: version %d on %s", i, version, base), func() bool {
				_, _, got = do("GET", base+"/api/v1/tenants/"+id, nil)
				v, _ := got["version"].(float64)
				return int64(v) >= version
			})
			if v := int64(got["version"].(float64)); v != version {
				t.Fatalf("round %d: version %d on %s, want %d (one per 200)", i, v, base, version)
			}
			if ra.code == http.StatusOK && got["status"] != status {
				t.Fatalf("round %d: %s answered 200 but %s shows the tenant %v: a lost update", i, action, base, got["status"])
			}
			rl, _ := got["rate_limit"].(map[string]any)
			if rb.code == http.StatusOK && (rl == nil || rl["requests_per_minute"] != float64(rpm)) {
				t.Fatalf("round %d: PATCH answered 200 but %s shows rate_limit %v: a lost update", i, base, rl)
			}
		}
	}
	if oks+conflicts != 200 || conflicts == 0 {
		t.Fatalf("%d × 200, %d × 409: the writes never raced", oks, conflicts)
	}
	t.Logf("100 rounds over two control-plane processes: %d × 200 (each applied), %d × 409 naming the current version", oks, conflicts)
}

// startControlPlane runs `partners control-plane` with env on its own
// ports until the test ends and returns its admin URL once ready.
func startControlPlane(t *testing.T, bin string, env []string) string {
	t.Helper()
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	out := &testenv.LogBuffer{}
	cmd := exec.Command(bin, "--config", "../../config/partners-engine.yaml", "control-plane")
	cmd.Env = append(env[:len(env):len(env)],
		"PARTNERS_ADMIN_LISTEN="+admin,
		"PARTNERS_ADMIN_URL=http://"+admin,
		fmt.Sprintf("PARTNERS_XDS_LISTEN=127.0.0.1:%d", testenv.FreePort(t)),
		fmt.Sprintf("PARTNERS_EXTAUTHZ_LISTEN=127.0.0.1:%d", testenv.FreePort(t)),
	)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var werr error
	exited := make(chan struct{})
	go func() { werr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
			if werr != nil && !t.Failed() {
				t.Errorf("control-plane exited with %v on SIGINT:\n%s", werr, out)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("control-plane did not stop within 30s of SIGINT")
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("control-plane exited before ready: %v\n%s", werr, out)
		default:
		}
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "http://" + admin
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("control-plane not ready after 90s:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
