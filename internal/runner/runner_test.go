package runner_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/runner"
	"github.com/partners-engine/partners-engine/internal/runner/routes"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores(
		// edge/authz's resolver cache (golang-lru's expirable LRU) runs a
		// janitor goroutine nothing can stop; the edge owns that lifecycle.
		goleak.IgnoreAnyFunction("github.com/hashicorp/golang-lru/v2/expirable.NewLRU[...].func1"),
	)...)
}

// start runs mode in-process on the test brokers (and ClickHouse, for the
// modes that need it) and returns the runner once it is ready; it stops at
// cleanup and must stop cleanly.
func start(t *testing.T, mode runner.Mode) (*runner.Runner, *config.Config) {
	t.Helper()
	cfg := testenv.Config(t)
	cfg.Kafka.Brokers = testenv.Brokers(t)
	if mode == runner.Dev || mode == runner.Attribution {
		testenv.ClickHouse(t, cfg) // skips without a ClickHouse; the database is dropped at cleanup
	}
	var logs testenv.LogBuffer
	r, err := runner.New(runner.Options{Mode: mode, Config: cfg, Log: logs.Logger(t),
		TracerProvider: noop.NewTracerProvider(), Metrics: prometheus.NewRegistry(), ShutdownTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s did not stop cleanly: %v", mode, err)
		}
		if strings.Contains(logs.String(), cfg.Admin.Token) || strings.Contains(logs.String(), cfg.Partner.Keys.Pepper) {
			t.Error("a secret reached the logs")
		}
	})
	select {
	case <-r.Ready():
	case err := <-done:
		t.Fatalf("%s failed to start: %v\n%s", mode, err, logs.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("%s not ready after 90s", mode)
	}
	return r, cfg
}

// request sends a request as a caller without credentials (or with the
// admin token) and returns the status and body.
func request(t *testing.T, base, pattern, token string) (int, string) {
	t.Helper()
	method, path, _ := strings.Cut(pattern, " ")
	path = strings.ReplaceAll(path, "{id}", "tn_0000000000000000")
	req, err := http.NewRequest(method, "http://"+base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", pattern, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestModesServeExactlyTheirRoutes: every process answers the routes of its
// sets (an unauthenticated call gets 401, not 404) and 404 "no such API
// route" for every other route of the table; probes and metrics answer
// everywhere.
func TestModesServeExactlyTheirRoutes(t *testing.T) {
	for _, mode := range routes.Modes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			r, cfg := start(t, mode)
			base := r.Addr(runner.ListenAdmin)
			testenv.Eventually(t, 60*time.Second, "ready", func() bool {
				code, _ := request(t, base, "GET /readyz", "")
				return code == http.StatusOK
			})
			for _, rt := range routes.All {
				code, body := request(t, base, rt.Pattern, "")
				served := routes.Serves(mode, rt.Set)
				switch {
				case !served && rt.Set == routes.UI:
					// Not under /api/: the plain 404 of a path nothing serves.
					if code != http.StatusNotFound || strings.Contains(body, "Sign in") {
						t.Errorf("%s must not serve the web UI (%s): got %d %.200s", mode, rt.Pattern, code, body)
					}
				case !served:
					if code != http.StatusNotFound || !strings.Contains(body, "no such API route") {
						t.Errorf("%s must not serve %s: got %d %s", mode, rt.Pattern, code, body)
					}
				case rt.Auth == routes.Session && strings.HasPrefix(rt.Pattern, "GET "):
					// Without a session the UI sends the browser to its sign-in page.
					if code != http.StatusOK || !strings.Contains(body, "Sign in") || !strings.Contains(body, `name="admin_token"`) {
						t.Errorf("%s: %s without a session answered %d, want the sign-in page: %.300s", mode, rt.Pattern, code, body)
					}
				case rt.Auth == routes.Session:
					// A form post without a session and its CSRF token is refused.
					if code != http.StatusForbidden {
						t.Errorf("%s: %s without a session answered %d, want 403 (%.300s)", mode, rt.Pattern, code, body)
					}
				case rt.Auth == routes.Public:
					if code != http.StatusOK {
						t.Errorf("%s: %s answered %d", mode, rt.Pattern, code)
					}
				default:
					if code != http.StatusUnauthorized {
						t.Errorf("%s: %s without credentials answered %d, want 401 (%s)", mode, rt.Pattern, code, body)
					}
				}
			}
			// The admin token opens exactly the served admin routes.
			code, body := request(t, base, "GET /api/v1/tenants", cfg.Admin.Token)
			if routes.Serves(mode, routes.Tenants) {
				var out map[string]any
				if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
					t.Errorf("%s: tenants with the admin token: %d %s", mode, code, body)
				}
			} else if code != http.StatusNotFound {
				t.Errorf("%s: GET /api/v1/tenants with the admin token: %d, want 404", mode, code)
			}
			if code, body := request(t, base, "GET /metrics", ""); code != http.StatusOK || !strings.Contains(body, "partners_registry_changes_applied_total") {
				t.Errorf("%s: /metrics lacks the registry's metrics (%d)", mode, code)
			}
			// The gRPC listeners exist exactly where the mode has them.
			hasXDS := mode == runner.Dev || mode == runner.ControlPlane
			hasAuthz := mode == runner.Dev || mode == runner.Edge
			if (r.Addr(runner.ListenXDS) != "") != hasXDS || (r.Addr(runner.ListenExtAuthz) != "") != hasAuthz {
				t.Errorf("%s: xds %q, ext_authz %q", mode, r.Addr(runner.ListenXDS), r.Addr(runner.ListenExtAuthz))
			}
		})
	}
}

// TestComponentModesRefuseDevValues: only dev runs with the public
// development secrets.
func TestComponentModesRefuseDevValues(t *testing.T) {
	t.Parallel()
	cfg := testenv.Config(t)
	cfg.Kafka.Brokers = []string{"127.0.0.1:1"}
	cfg.Admin.Token = config.DevAdminToken
	for _, m := range routes.Modes {
		_, err := runner.New(runner.Options{Mode: m, Config: cfg})
		if m == runner.Dev {
			if err != nil {
				t.Errorf("dev: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "admin.token: is the public development default") {
			t.Errorf("%s with the dev admin token: %v", m, err)
		}
	}
	cfg.Admin.Token = "a-real-token-0123456789"
	cfg.Kafka.Brokers = nil
	if _, err := runner.New(runner.Options{Mode: runner.Webhooks, Config: cfg}); err == nil || !strings.Contains(err.Error(), "kafka.brokers is empty") {
		t.Errorf("webhooks without brokers: %v", err)
	}
}
