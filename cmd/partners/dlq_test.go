package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDLQListShowsWhatHappened: `partners dlq list` (table) shows each dead
// letter's reason code, its last HTTP status ("—" when no attempt got an
// answer) and its last error even where the reason text does not carry it,
// so no row reads a bare "attempts exhausted" with a blank status.
func TestDLQListShowsWhatHappened(t *testing.T) {
	const body = `{"dead_letters":[
{"delivery_id":"msg_503","tenant_id":"tn_a","endpoint_id":"ep_a","event_type":"order.created","attempts":8,"last_status":503,
 "last_error":"HTTP 503 Service Unavailable","reason":"attempts exhausted (8 of 8): HTTP 503 Service Unavailable","reason_code":"http_status",
 "status":"dead","replays":0,"dead_at":"2026-01-02T03:04:05Z"},
{"delivery_id":"msg_held","tenant_id":"tn_a","endpoint_id":"ep_a","event_type":"order.created","attempts":3,
 "last_error":"connection refused","reason":"max age exceeded (24h0m0s) while held: circuit breaker open; last error: connection refused",
 "reason_code":"breaker_open","status":"dead","replays":0,"dead_at":"2026-01-02T03:04:06Z"},
{"delivery_id":"msg_susp","tenant_id":"tn_b","endpoint_id":"ep_b","event_type":"lead.qualified","attempts":2,"last_status":429,
 "last_error":"HTTP 429 Too Many Requests","reason":"tenant suspended","reason_code":"tenant_suspended",
 "status":"dead","replays":1,"dead_at":"2026-01-02T03:04:07Z"}]}`
	var gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/dlq" || r.Header.Get("Authorization") != "Bearer dlq-test-token" {
			http.Error(w, `{"title":"not found"}`, http.StatusNotFound)
			return
		}
		gotQuery = r.URL.RawQuery
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	t.Setenv("PARTNERS_ADMIN_URL", srv.URL)
	t.Setenv("PARTNERS_ADMIN_TOKEN", "dlq-test-token")
	var out, errOut bytes.Buffer
	a := &app{stdout: &out, stderr: &errOut}
	root := a.rootCmd()
	root.SetArgs([]string{"--config", "../../config/partners-engine.yaml", "dlq", "list", "--tenant", "tn_a", "--reason", "http_status"})
	if err := root.Execute(); err != nil {
		t.Fatalf("dlq list: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(gotQuery, "tenant=tn_a") || !strings.Contains(gotQuery, "reason=http_status") {
		t.Errorf("filters not sent: %q", gotQuery)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "LAST STATUS") || !strings.Contains(lines[0], "REASON CODE") {
		t.Fatalf("table:\n%s", out.String())
	}
	row := func(id string) []string {
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) > 0 && f[0] == id {
				return f
			}
		}
		t.Fatalf("no row for %s:\n%s", id, out.String())
		return nil
	}
	// Columns: id, tenant, endpoint, type, status, attempts, last status,
	// dead at, reason code, reason words…
	for _, c := range []struct{ id, status, code, words string }{
		{"msg_503", "503", "http_status", "attempts exhausted (8 of 8): HTTP 503 Service Unavailable"},
		{"msg_held", "—", "breaker_open", "circuit breaker open; last error: connection refused"},
		{"msg_susp", "429", "tenant_suspended", "tenant suspended (last error: HTTP 429 Too Many Requests)"},
	} {
		f := row(c.id)
		if f[6] != c.status || f[8] != c.code || !strings.Contains(strings.Join(f[9:], " "), c.words) {
			t.Errorf("row %s: last status %q, reason code %q, reason %q; want %q, %q, …%q…", c.id, f[6], f[8], strings.Join(f[9:], " "), c.status, c.code, c.words)
		}
	}
	if strings.Count(out.String(), "connection refused") != 1 {
		t.Errorf("the last error is repeated where the reason already says it:\n%s", out.String())
	}
}

// TestDLQListEmptySaysSo: an empty selection says so (not a bare header).
func TestDLQListEmptySaysSo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"dead_letters":[]}`))
	}))
	defer srv.Close()
	t.Setenv("PARTNERS_ADMIN_URL", srv.URL)
	var out, errOut bytes.Buffer
	a := &app{stdout: &out, stderr: &errOut}
	root := a.rootCmd()
	root.SetArgs([]string{"--config", "../../config/partners-engine.yaml", "dlq", "list", "--tenant", "tn_none"})
	if err := root.Execute(); err != nil {
		t.Fatalf("dlq list: %v\n%s", err, errOut.String())
	}
	if got := strings.TrimSpace(out.String()); !strings.HasPrefix(got, "no dead letters match") || strings.Contains(got, "DELIVERY ID") {
		t.Fatalf("empty dlq list printed:\n%s", got)
	}
}
