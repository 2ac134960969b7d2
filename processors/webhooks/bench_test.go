package webhooks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/internal/benchrow"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/ssrf"
)

func BenchmarkSign1KB(b *testing.B) {
	body := benchPayloads(1, 1024)[0]
	s := []string{benchSecret(1)}
	now := time.Now()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		_, _ = Sign(s, "msg_x", now, body)
	}
}

func BenchmarkSignedDelivery(b *testing.B) {
	rcv, err := newBenchReceiver()
	if err != nil {
		b.Fatal(err)
	}
	defer rcv.close()
	cfg := config.Default()
	rules, _ := ssrf.ParseRules([]string{"127.0.0.1/32:1-65535"})
	hc := newHTTPClient(cfg.Partner.Webhooks, ssrf.NewGuard(rules))
	defer hc.CloseIdleConnections()
	body := benchPayloads(1, 1024)[0]
	s := []string{benchSecret(1)}
	i := 0
	for b.Loop() {
		i++
		if a := send(context.Background(), hc, 1<<16, Request{URL: rcv.url, ID: fmt.Sprint(i), Body: body, Secrets: s}, time.Now()); a.Class != Delivered {
			b.Fatal(a.Err)
		}
	}
}

// TestBenchQuick runs the make-bench function in quick mode: every row has a
// value and a same-run baseline.
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("benchmark smoke run")
	}
	rows, err := Bench(context.Background(), benchrow.Env{Brokers: nil, Quick: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("want 4 rows, got %d: %+v", len(rows), rows)
	}
	for _, r := range rows {
		if r.Value <= 0 || r.BaselineValue <= 0 || r.Baseline == "" {
			t.Errorf("row without a value or baseline: %+v", r)
		}
		t.Logf("%-75s %12.1f %-13s | %-40s %12.1f | ratio %.2f", r.Name, r.Value, r.Unit, r.Baseline, r.BaselineValue, r.Ratio())
	}
}
