package webhooks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/ssrf"
)

func testClient(t *testing.T, allow ...string) *http.Client {
	rules, err := ssrf.ParseRules(allow)
	if err != nil {
		t.Fatal(err)
	}
	g := ssrf.NewGuard(rules)
	cfg := config.Default().Partner.Webhooks
	cfg.Timeouts = config.Timeouts{Connect: 500 * time.Millisecond, Total: time.Second}
	hc := newHTTPClient(cfg, g)
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// TestSendGuardsAndLimits: the SSRF guard refuses loopback unless allowed
// (permanent, no request made), redirects are not followed (permanent, the
// target never called), and a huge response body is read only up to the cap.
func TestSendGuardsAndLimits(t *testing.T) {
	var target, hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, "/target", http.StatusFound)
		case "/target":
			target.Add(1)
		case "/huge":
			w.WriteHeader(200)
			chunk := []byte(strings.Repeat("z", 64<<10))
			for i := 0; i < 160; i++ { // 10 MiB
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}
	}))
	defer srv.Close()
	req := func(path string) Request {
		return Request{URL: srv.URL + path, ID: "msg_1", EventType: "order.created", Body: []byte(`{}`), Secrets: []string{secret(1)}}
	}
	ctx := context.Background()

	a := send(ctx, testClient(t), 1<<10, req("/target"), time.Now())
	if a.Class != Permanent || !strings.Contains(a.Err, "not allowed") || hits.Load() != 0 {
		t.Fatalf("loopback without allow-list: %+v, %d requests reached the server", a, hits.Load())
	}
	hc := testClient(t, "127.0.0.1/32:1-65535")
	if a := send(ctx, hc, 1<<10, req("/redirect"), time.Now()); a.Class != Permanent || a.StatusCode != 302 || target.Load() != 0 {
		t.Fatalf("redirect: %+v, target hit %d times", a, target.Load())
	}
	start := time.Now()
	if a := send(ctx, hc, 1<<10, req("/huge"), time.Now()); a.Class != Delivered {
		t.Fatalf("huge body: %+v", a)
	}
	t.Logf("10 MiB response handled in %v (read up to 1 KiB)", time.Since(start))
	if a := send(ctx, hc, 1<<10, Request{URL: "ftp://example.com/x", ID: "m", Body: []byte(`{}`), Secrets: []string{secret(1)}}, time.Now()); a.Class != Permanent {
		t.Fatalf("non-http URL: %+v", a)
	}
}
