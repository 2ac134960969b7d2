package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func noEnv(string) (string, bool) { return "", false }

// TestFixtures runs every testdata fixture. A fixture's header lines say
// what it expects: "# error: <message>" (Parse fails with it), "# refused:
// <message>" (Parse accepts it, DevOnly refuses it: only `partners dev`
// may run it), nothing for a *.good.yaml (valid everywhere); "# env:
// NAME=<Go-quoted value>" lines set the environment.
func TestFixtures(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			env := map[string]string{}
			var wantErr, wantRefused string
			for _, line := range strings.Split(string(b), "\n") {
				if !strings.HasPrefix(line, "# ") {
					break
				}
				if v, ok := strings.CutPrefix(line, "# error: "); ok {
					wantErr = v
				}
				if v, ok := strings.CutPrefix(line, "# refused: "); ok {
					wantRefused = v
				}
				if v, ok := strings.CutPrefix(line, "# env: "); ok {
					name, val, _ := strings.Cut(v, "=")
					uq, err := strconv.Unquote(val)
					if err != nil {
						t.Fatalf("env line %q: %v", line, err)
					}
					env[name] = uq
				}
			}
			cfg, err := Parse(b, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			switch {
			case strings.HasSuffix(f, ".good.yaml"):
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				if err := cfg.DevOnly(); err != nil {
					t.Fatalf("want valid outside dev too, got %v", err)
				}
			case wantErr != "":
				if err == nil {
					t.Fatalf("want error %q, got none", wantErr)
				}
				if !strings.Contains(err.Error(), wantErr) {
					t.Fatalf("error %q does not contain %q", err, wantErr)
				}
			case wantRefused != "":
				if err != nil {
					t.Fatalf("want valid for dev, got %v", err)
				}
				err := cfg.DevOnly()
				if err == nil || !strings.Contains(err.Error(), wantRefused) {
					t.Fatalf("DevOnly: want %q, got %v", wantRefused, err)
				}
			default:
				t.Fatalf("bad fixture must start with '# error: <message>' or '# refused: <message>'")
			}
		})
	}
}

func TestShippedConfigIsValid(t *testing.T) {
	t.Parallel()
	cfg, err := Load("../../config/partners-engine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Kafka.Brokers) != 0 {
		t.Fatalf("default brokers should be empty (embedded), got %q", cfg.Kafka.Brokers)
	}
	if cfg.Partner.RateLimit.ForTier("sandbox").RequestsPerMinute != 20 {
		t.Fatalf("sandbox tier: %+v", cfg.Partner.RateLimit.ForTier("sandbox"))
	}
}

func TestPlaceholders(t *testing.T) {
	t.Parallel()
	env := map[string]string{"BROKERS": "10.0.0.1:9092", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := []struct{ in, want string }{
		{"${env:BROKERS}", "10.0.0.1:9092"},
		{"${env:BROKERS:-x:1}", "10.0.0.1:9092"},
		{"${env:MISSING:-127.0.0.1:9000}", "127.0.0.1:9000"},
		{"${env:EMPTY:-d}", "d"},
		{"${env:MISSING}", ""},
		{"a ${env:BROKERS} b", "a 10.0.0.1:9092 b"},
	}
	for _, c := range cases {
		if got, _ := ExpandValue(c.in, lookup); got != c.want {
			t.Errorf("Expand(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	b, _ := os.ReadFile("../../config/partners-engine.yaml")
	cfg, err := Parse(b, func(k string) (string, bool) {
		if k == "PARTNERS_KAFKA_BROKERS" {
			return "127.0.0.1:9092", true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Kafka.Brokers) != 1 || cfg.Kafka.Brokers[0] != "127.0.0.1:9092" {
		t.Fatalf("brokers from env: %q", cfg.Kafka.Brokers)
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	r := Retry{MaxAttempts: 5, BackoffBase: 2 * time.Second, BackoffMultiplier: 2}
	for n, want := range map[int]float64{1: 2, 2: 4, 3: 8, 4: 16} {
		if got := r.Delay(n).Seconds(); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestValidationNamesEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := Default()
	cfg.Partner.Keys.Pepper = "0123456789abcdef"
	cfg.Admin.Token = "tok-123456"
	cfg.Listeners.Admin = "nope"
	cfg.Telemetry.LogFormat = "xml"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{`listeners.admin: must be host:port (got "nope")`, `telemetry.log_format: must be one of text, json (got "xml")`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %q", err, want)
		}
	}
}

func TestPlaceholdersExpandParsedValues(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"PW":      "abc #defghijkl",
		"BROKERS": "10.0.0.1:9092, 10.0.0.2:9092",
		"YAML":    "x\nadmin: {token: injected}",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	y := `partner:
  keys: {pepper: "0123456789abcdef0123"}
admin: {token: "s3cret-token"}
kafka:
  brokers: ${env:BROKERS}
  client_id: ${env:YAML}
clickhouse:
  password: ${env:PW}
  username: $${env:LITERAL}
`
	cfg, err := Parse([]byte(y), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClickHouse.Password != "abc #defghijkl" {
		t.Errorf("password = %q: a '#' in a value must stay", cfg.ClickHouse.Password)
	}
	if !slices.Equal(cfg.Kafka.Brokers, []string{"10.0.0.1:9092", "10.0.0.2:9092"}) {
		t.Errorf("brokers = %q", cfg.Kafka.Brokers)
	}
	if cfg.Kafka.ClientID != env["YAML"] || cfg.Admin.Token != "s3cret-token" {
		t.Errorf("an env value became YAML: client_id %q, token %q", cfg.Kafka.ClientID, cfg.Admin.Token)
	}
	if cfg.ClickHouse.Username != "${env:LITERAL}" {
		t.Errorf("escaped placeholder: %q", cfg.ClickHouse.Username)
	}
}

func TestSeedKeysDecodeToDurations(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/seed-durations.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(b, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ got, want time.Duration }{
		"tenant_resolution_ttl_sec":     {cfg.Partner.Gateway.TenantResolutionTTL, 45 * time.Second},
		"backoff_base_sec":              {cfg.Partner.Webhooks.Retry.BackoffBase, 2 * time.Second},
		"retention_days":                {cfg.Partner.Webhooks.DLQ.Retention, 30 * 24 * time.Hour},
		"roi_window_days":               {cfg.Partner.Attribution.ROIWindow, 30 * 24 * time.Hour},
		"materialized_view_refresh_sec": {cfg.Partner.Attribution.MaterializedViewRefresh, 300 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", name, c.got, c.want)
		}
	}
	frac, err := Parse([]byte("partner:\n  keys: {pepper: \"0123456789abcdef0123\"}\n  webhooks: {retry: {backoff_base_sec: 0.25}, timeouts: {connect_sec: 1.5s}}\nadmin: {token: s3cret-token}\nxds: {upstream_timeout_ms: 250}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if frac.Partner.Webhooks.Retry.BackoffBase != 250*time.Millisecond || frac.Partner.Webhooks.Timeouts.Connect != 1500*time.Millisecond || frac.XDS.UpstreamTimeout != 250*time.Millisecond {
		t.Errorf("fractions and duration strings: %v %v %v", frac.Partner.Webhooks.Retry.BackoffBase, frac.Partner.Webhooks.Timeouts.Connect, frac.XDS.UpstreamTimeout)
	}
}

// TestShippedConfigIsDevOnly: the shipped config falls back to public
// development secrets; only `partners dev` may run with them, and the
// refusal says which variables to set.
func TestShippedConfigIsDevOnly(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../config/partners-engine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(b, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.DevOnly()
	if err == nil {
		t.Fatal("the development defaults must be refused outside partners dev")
	}
	for _, want := range []string{"admin.token: is the public development default, which only `partners dev` accepts (set PARTNERS_ADMIN_TOKEN)",
		"partner.keys.pepper: is the public development default, which only `partners dev` accepts (set PARTNERS_KEY_PEPPER)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), DevAdminToken) || strings.Contains(err.Error(), DevPepper) {
		t.Errorf("the refusal shows a secret: %v", err)
	}
	set := map[string]string{"PARTNERS_ADMIN_TOKEN": "a-real-token-0123456789", "PARTNERS_KEY_PEPPER": "a-real-pepper-0123456789abcdef"}
	cfg, err = Parse(b, func(k string) (string, bool) { v, ok := set[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.DevOnly(); err != nil {
		t.Fatalf("with real secrets: %v", err)
	}
}

// TestEveryProblemNamesAKeyPath: every check of every section names a key
// that exists, so no Validate points at a field outside its section.
func TestEveryProblemNamesAKeyPath(t *testing.T) {
	t.Parallel()
	var zero Config
	zero.Partner.RateLimit.Tiers = map[string]RateLimit{"gold": {}}
	zero.Partner.Attribution.CurrencyRates = map[string]string{"EUR": "x"}
	zero.Partner.Webhooks.AllowPrivate = []string{"nope"}
	zero.Regions = Regions{{}, {}}
	err := zero.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	if len(ve.Problems) < 40 {
		t.Errorf("only %d problems in a zero config", len(ve.Problems))
	}
	for _, p := range ve.Problems {
		path, _, _ := strings.Cut(p, ": ")
		if strings.Contains(path, "?") || path == "" || path == "(top level)" {
			t.Errorf("problem without a key path: %s", p)
		}
	}
	for _, want := range []string{`partner.rate_limit.tiers.gold.burst_size: must be > 0 (got "0")`, `regions[1].name: is a duplicate (got "")`,
		`partner.attribution.currency_rates.EUR: must be a positive decimal (got "x")`, `clickhouse.dial_timeout_sec: must be > 0 (got "0")`} {
		if !slices.Contains(ve.Problems, want) {
			t.Errorf("missing %q", want)
		}
	}
}

func TestSectionValidatesAlone(t *testing.T) {
	t.Parallel()
	w := Default().Partner.Webhooks
	w.Retry.MaxAttempts = 0
	err := Validate(&w)
	if err == nil || !strings.Contains(err.Error(), `retry.max_attempts: must be between 1 and 20 (got "0")`) {
		t.Fatalf("section paths are relative to the section: %v", err)
	}
	if err := w.Retry.Validate(); err == nil || !strings.Contains(err.Error(), `max_attempts: must be between 1 and 20`) {
		t.Fatalf("a section's own Validate: %v", err)
	}
}
