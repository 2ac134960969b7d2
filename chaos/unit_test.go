package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
)

// The suite's own parts, without servers: the profiles parse, overrides
// land on the shipped configuration, the oracle and the judge fail on what
// they must fail on.

func TestProfilesLoad(t *testing.T) {
	for _, name := range []string{"bounded", "long"} {
		p, err := loadProfile(name)
		if err != nil {
			t.Fatal(err)
		}
		if p.Rounds < 1 || p.Settle <= 0 {
			t.Errorf("%s: %+v", name, p)
		}
	}
	if _, err := loadProfile("testdata/unknown-scenario.yaml"); err == nil || !strings.Contains(err.Error(), `unknown scenario "no-such-fault"`) {
		t.Errorf("a profile naming an unknown scenario: err %v", err)
	}
}

func TestOverridesApplyToShippedConfig(t *testing.T) {
	base := []byte("partner:\n  webhooks:\n    retry: {max_attempts: 5, backoff_base_sec: 2}\n")
	out, skipped, err := applyOverrides(base, map[string]any{
		"partner.webhooks.retry.backoff_base_sec": 0.5,
		"partner.webhooks.retry.max_age_sec":      600,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "backoff_base_sec: 0.5") || !strings.Contains(string(out), "max_attempts: 5") {
		t.Errorf("override not applied:\n%s", out)
	}
	if len(skipped) != 1 || skipped[0] != "partner.webhooks.retry.max_age_sec" {
		t.Errorf("skipped %v, want the key the file does not have", skipped)
	}
}

func TestOracleAndCompare(t *testing.T) {
	a := config.Default().Partner.Attribution
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	touches := []schemas.Touchpoint{
		{ID: "t1", UserID: "u1", PartnerID: "p1", OccurredAt: now.Add(-time.Hour)},
		{ID: "t2", UserID: "u1", PartnerID: "p2", OccurredAt: now.Add(-time.Minute)},
	}
	convs := []schemas.Conversion{
		{ID: "c1", UserID: "u1", Kind: schemas.ConversionPurchase, Amount: decimal.RequireFromString("100.01"), Currency: "EUR", OccurredAt: now},
		{ID: "c2", UserID: "u2", Kind: schemas.ConversionPurchase, Amount: decimal.RequireFromString("5"), Currency: "USD", OccurredAt: now}, // no touch
	}
	costs := []schemas.Cost{{ID: "k1", PartnerID: "p1", Amount: decimal.RequireFromString("10"), Currency: "GBP", OccurredAt: now}}
	want, err := oracleROI(a, []string{"p1", "p2"}, touches, convs, costs)
	if err != nil {
		t.Fatal(err)
	}
	// 100.01 EUR at 1.08 = 108.01 USD; linear splits it 54.01 / 54.00.
	lin1, lin2 := want[roiKey{"p1", models.Linear}], want[roiKey{"p2", models.Linear}]
	if lin1.Revenue.StringFixed(2) != "54.01" || lin2.Revenue.StringFixed(2) != "54.00" || lin1.Cost.StringFixed(2) != "12.70" || lin1.Leads != 1 {
		t.Fatalf("oracle linear: p1 %+v p2 %+v", lin1, lin2)
	}
	if ft := want[roiKey{"p1", models.FirstTouch}]; ft.Revenue.StringFixed(2) != "108.01" {
		t.Errorf("first touch: %s", ft.Revenue)
	}
	rows := func(rev string) []roiRow {
		var out []roiRow
		for k, c := range want {
			r := roiRow{PartnerID: k.partner, Model: k.model, Revenue: c.Revenue.StringFixed(2), Cost: c.Cost.StringFixed(2),
				Conversions: c.Conversions.InexactFloat64(), Leads: uint64(c.Leads)}
			if !c.Cost.IsZero() {
				f := c.Revenue.Sub(c.Cost).DivRound(c.Cost, 16).Round(4).InexactFloat64()
				r.ROI = &f
			}
			if k == (roiKey{"p1", models.Linear}) && rev != "" {
				r.Revenue = rev
			}
			out = append(out, r)
		}
		return out
	}
	if d := compareROI(want, rows("")); len(d) != 0 {
		t.Errorf("identical rows differ: %v", d)
	}
	if d := compareROI(want, rows("54.02")); len(d) != 1 || !strings.Contains(d[0], "revenue 54.02 want 54.01") {
		t.Errorf("one cent off: %v", d)
	}
}

func TestJudgeFails(t *testing.T) {
	ok := result{Expected: 10, Made: 10, DLQExpected: 2, DLQGot: 2, ROIEqual: true, RegistryEqual: true, Touchpoints: 3, ChecksAllowed: 3}
	ok.judge()
	if len(ok.Failures) != 0 {
		t.Fatalf("a clean result fails: %v", ok.Failures)
	}
	supervised := ok
	supervised.Failures, supervised.ProcessExits = nil, map[string][]string{"webhooks#0": {"exit status 1"}}
	if supervised.judge(); len(supervised.Failures) != 0 {
		t.Fatalf("an exit where a supervisor restarts the process fails: %v", supervised.Failures)
	}
	for name, r := range map[string]result{
		"lost":     {Lost: 1, ROIEqual: true, RegistryEqual: true},
		"repeats":  {Repeated: 3, RepeatBound: 2, ROIEqual: true, RegistryEqual: true},
		"dlq":      {DLQExpected: 2, DLQGot: 3, ROIEqual: true, RegistryEqual: true},
		"roi":      {ROIEqual: false, RegistryEqual: true},
		"registry": {ROIEqual: true, RegistryEqual: false},
		"touches":  {ChecksAllowed: 2, Touchpoints: 1, ROIEqual: true, RegistryEqual: true},
		"recover":  {RecoverSeconds: -1, ROIEqual: true, RegistryEqual: true},
		"exit":     {MustNotExit: true, ProcessExits: map[string][]string{"webhooks#0": {"exit status 1"}}, ROIEqual: true, RegistryEqual: true},
	} {
		r.judge()
		if len(r.Failures) == 0 {
			t.Errorf("%s: judged a pass", name)
		}
	}
}

func TestSeqOf(t *testing.T) {
	if got := seqOf("evt_webhookskill1_ab12_000123"); got != 123 {
		t.Errorf("seqOf = %d", got)
	}
}

func TestStackSummary(t *testing.T) {
	dump := `{"time":"x","level":"INFO","msg":"listening"}
SIGQUIT: quit
PC=0x47 m=0 sigcode=0

goroutine 1 [running]:
main.main()

goroutine 7 [select, 4 minutes]:
github.com/twmb/franz-go/pkg/kgo.(*Client).PollRecords(0xc0, {0x1, 0x2}, 0x0)
	/root/go/pkg/mod/github.com/twmb/franz-go@v1.22.3/pkg/kgo/consumer.go:600 +0x1
github.com/partners-engine/partners-engine/internal/kafka.(*TxnStage).Run(0xc0, {0x1})
	/work/main/internal/kafka/stage.go:300 +0x2

goroutine 9 [chan receive, 3 minutes]:
github.com/partners-engine/partners-engine/internal/kafka.(*TxnStage).Run(0xc0, {0x1})
	/work/main/internal/kafka/stage.go:310 +0x2

goroutine 11 [IO wait, 5 minutes]:
internal/poll.runtime_pollWait(0x1, 0x72)
	/usr/lib/go/src/runtime/netpoll.go:351 +0x85

goroutine 12 [select]:
github.com/partners-engine/partners-engine/processors/webhooks.deliver()
	/work/main/processors/webhooks/deliver.go:1 +0x1
`
	path := filepath.Join(t.TempDir(), "p.log")
	if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
		t.Fatal(err)
	}
	got := stackSummary(path)
	for _, want := range []string{"1× kafka.(*TxnStage).Run [select, 4 minutes]", "1× kafka.(*TxnStage).Run [chan receive, 3 minutes]", "1× (no frame of this module) [IO wait, 5 minutes]"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "deliver") || strings.Contains(got, "main.main") {
		t.Errorf("summary %q counts goroutines that waited less than a minute", got)
	}
	if got := stackSummary(filepath.Join(t.TempDir(), "none.log")); !strings.Contains(got, "no such file") {
		t.Errorf("missing log: %q", got)
	}
}

// TestRepeatWindows: the bound counts the deliveries whose first 2xx fell
// in a redo window (ends included), and the diagnosis names the repeated
// ones that did not.
func TestRepeatWindows(t *testing.T) {
	t0 := time.UnixMilli(1_000_000)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	r := &receiver{mode: healthy, hooks: map[string]*hook{
		"in-repeated":  {okAt: at(5), afterOK: 1, log: []string{"1005000:204", "1009000:204"}},
		"edge":         {okAt: at(10)},
		"out-repeated": {okAt: at(20), afterOK: 2, log: []string{"1020000:204", "1021000:204", "1022000:204"}},
		"out":          {okAt: at(30)},
		"never-ok":     {afterOK: 0},
	}}
	ws := []window{{at(4), at(10)}}
	if n := r.succeededIn(ws); n != 2 {
		t.Errorf("succeededIn = %d, want 2 (in-repeated, edge)", n)
	}
	n, sample := r.repeatedOutside(ws, t0, 3)
	if n != 1 || len(sample) != 1 || !strings.Contains(sample[0], "out-repeated") || !strings.Contains(sample[0], "20.00s→204 21.00s→204 22.00s→204") {
		t.Errorf("repeatedOutside = %d %q, want out-repeated with its three requests", n, sample)
	}
}
