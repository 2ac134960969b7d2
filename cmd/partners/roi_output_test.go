package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestROIPrintsWhatTheServerSent: `partners roi` shows every number of the
// API's answer as sent — fractional conversions and new customers past
// float32's precision, customers beyond 2^24, ROI and LTV:CAC with all their
// digits, money strings untouched, null as "-" — in the table and in JSON.
func TestROIPrintsWhatTheServerSent(t *testing.T) {
	const body = `{"window_days":30,"from":"2026-11-02","to":"2026-12-01","rows":[` +
		`{"partner_id":"tn_0123456789abcdef","model":"linear","revenue":"1234.5678","cost":"100.00","conversions":1234.5678,` +
		`"leads":3,"new_customers":0.3333333333333333,"customers":16777217,"roi":11.345678,"cpl":"33.33","cac":null,"ltv":"0.07","ltv_cac":2.718281828459045}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/analytics/roi" || r.Header.Get("Authorization") != "Bearer roi-test-token" {
			http.Error(w, "unexpected request", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	t.Setenv("PARTNERS_ADMIN_URL", srv.URL)
	t.Setenv("PARTNERS_ADMIN_TOKEN", "roi-test-token")

	roi := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		a := &app{stdout: &out, stderr: &out}
		root := a.rootCmd()
		root.SetArgs(append([]string{"--config", "../../config/partners-engine.yaml", "roi", "--model", "linear"}, args...))
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatalf("roi %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	table := roi()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || lines[0] != "window 30 days, 2026-11-02 to 2026-12-01 (UTC)" {
		t.Fatalf("table:\n%s", table)
	}
	head, row := strings.Fields(lines[1]), strings.Fields(lines[2])
	want := map[string]string{"REVENUE": "1234.5678", "COST": "100.00", "CONVERSIONS": "1234.5678", "LEADS": "3",
		"CUST": "0.3333333333333333", "CUSTOMERS": "16777217", "ROI": "11.345678", "CPL": "33.33", "CAC": "-", "LTV": "0.07", "LTV:CAC": "2.718281828459045"}
	// "NEW CUST" is one column of two words.
	cols := map[string]string{}
	for i, j := 0, 0; i < len(head) && j < len(row); i, j = i+1, j+1 {
		if head[i] == "NEW" {
			i++
		}
		cols[head[i]] = row[j]
	}
	for k, v := range want {
		if cols[k] != v {
			t.Errorf("column %s: %q, want %q\n%s", k, cols[k], v, table)
		}
	}
	js := roi("--format", "json")
	for _, s := range []string{`"conversions": 1234.5678`, `"new_customers": 0.3333333333333333`, `"customers": 16777217`,
		`"roi": 11.345678`, `"ltv_cac": 2.718281828459045`, `"from": "2026-11-02"`, `"to": "2026-12-01"`, `"cac": null`} {
		if !strings.Contains(js, s) {
			t.Errorf("json output lacks %s:\n%s", s, js)
		}
	}
}
