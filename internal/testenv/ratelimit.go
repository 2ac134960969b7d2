package testenv

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The global rate-limit service of the edge: Redis (Debian's redis-server)
// and envoyproxy/ratelimit, installed and started by deploy/local/redis.sh
// and deploy/local/ratelimit.sh (make test runs both). Tests count in the
// shared Redis under their own key prefix, start their own rate-limit
// service processes against their own control planes, and start a Redis of
// their own when they kill it.

// RedisAddr is the shared test Redis: PARTNERS_TEST_REDIS (make test sets
// it: deploy/local/redis.sh on 127.0.0.1:16379), and the test fails when it
// does not answer. Unset, the test is skipped (make unit, a bare go test).
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("PARTNERS_TEST_REDIS")
	if addr == "" || testing.Short() {
		t.Skip("needs Redis and envoyproxy/ratelimit: PARTNERS_TEST_REDIS (make test starts and sets them)")
	}
	if err := RedisPing(addr); err != nil {
		t.Fatalf("no Redis at PARTNERS_TEST_REDIS=%s (%v): run bash deploy/local/ratelimit.sh start", addr, err)
	}
	return addr
}

// RedisPing sends PING and expects PONG.
func RedisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Redis is a redis-server a test runs and may kill.
type Redis struct {
	t    testing.TB
	Addr string
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// StartRedis runs a redis-server of the test's own on a free loopback port
// (no persistence), stopped at cleanup.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	RedisAddr(t) // the shared one is up: redis-server is installed
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not installed: run bash deploy/local/redis.sh install")
	}
	r := &Redis{t: t, Addr: FreeAddr(t), dir: t.TempDir()}
	r.Start()
	t.Cleanup(r.Kill)
	return r
}

// Start (re)starts the server on its address and waits until it answers.
func (r *Redis) Start() {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	go func() { _ = cmd.Wait() }()
	Eventually(r.t, 20*time.Second, "redis-server answers on "+r.Addr, func() bool { return RedisPing(r.Addr) == nil })
}

// Kill sends SIGKILL, as a crash would.
func (r *Redis) Kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		deadline := time.Now().Add(10 * time.Second)
		for RedisPing(r.Addr) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// RateLimitBin is the envoyproxy/ratelimit binary deploy/local/ratelimit.sh
// installs: PARTNERS_RATELIMIT_BIN, else <repo>/.local/bin/ratelimit.
func RateLimitBin(t testing.TB) string {
	t.Helper()
	RedisAddr(t) // skips without the rate-limit stack
	bin := os.Getenv("PARTNERS_RATELIMIT_BIN")
	if bin == "" {
		bin = filepath.Join(RepoRoot(t), ".local", "bin", "ratelimit")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("envoyproxy/ratelimit not installed at %s: run bash deploy/local/ratelimit.sh install (make test does)", bin)
	}
	return bin
}

// RateLimitOptions configure a rate-limit service process.
type RateLimitOptions struct {
	XDS       string // control plane it takes its configuration from
	Region    string // node metadata region
	Redis     string // where it counts
	KeyPrefix string // CACHE_KEY_PREFIX: tests sharing a Redis never share counters
}

// RateLimit is a running envoyproxy/ratelimit process.
type RateLimit struct {
	t    testing.TB
	Addr string // gRPC, envoy.service.ratelimit.v3
	http string
	opt  RateLimitOptions
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// StartRateLimit runs the rate-limit service as deploy/local/ratelimit.sh
// does (configuration over xDS, counters in Redis, every listener on
// loopback) and waits until it has loaded a configuration. It is killed at
// cleanup; its log is printed when the test fails.
func StartRateLimit(t testing.TB, opt RateLimitOptions) *RateLimit {
	t.Helper()
	r := &RateLimit{t: t, opt: opt, log: filepath.Join(t.TempDir(), "ratelimit.log")}
	r.Start()
	t.Cleanup(func() {
		r.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(r.log); err == nil {
				t.Logf("rate-limit service log:\n%s", tail(string(b), 40))
			}
		}
	})
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Start (re)starts the service on fresh ports.
func (r *RateLimit) Start() {
	r.t.Helper()
	bin := RateLimitBin(r.t)
	grpcAddr, httpAddr, debugAddr := FreeAddr(r.t), FreeAddr(r.t), FreeAddr(r.t)
	port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
	f, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(),
		"HOST=127.0.0.1", "PORT=" + port(httpAddr), "GRPC_HOST=127.0.0.1", "GRPC_PORT=" + port(grpcAddr),
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT=" + port(debugAddr),
		"USE_STATSD=false", "USE_PROMETHEUS=false", "DISABLE_STATS=true", "LOG_LEVEL=warn", "LOG_FORMAT=json",
		"BACKEND_TYPE=redis", "REDIS_SOCKET_TYPE=tcp", "REDIS_TYPE=SINGLE", "REDIS_URL=" + r.opt.Redis, "REDIS_TIMEOUT=1s",
		"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT=true", "LOCAL_CACHE_SIZE_IN_BYTES=0", "EXPIRATION_JITTER_MAX_SECONDS=0",
		"CACHE_KEY_PREFIX=" + r.opt.KeyPrefix,
		"CONFIG_TYPE=GRPC_XDS_SOTW", "CONFIG_GRPC_XDS_SERVER_URL=" + r.opt.XDS,
		"CONFIG_GRPC_XDS_NODE_ID=ratelimit-" + r.opt.Region + "-" + RandomID(), "CONFIG_GRPC_XDS_NODE_METADATA=region=" + r.opt.Region,
		"HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED=true",
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.cmd, r.Addr, r.http = cmd, grpcAddr, httpAddr
	r.mu.Unlock()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(r.log)
			r.t.Fatalf("rate-limit service exited during startup:\n%s", tail(string(b), 30))
		default:
		}
		if resp, err := http.Get("http://" + httpAddr + "/healthcheck"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.log)
			r.t.Fatalf("rate-limit service not healthy (configuration loaded) within 30s:\n%s", tail(string(b), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL.
func (r *RateLimit) Kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}
