package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func noEnv(string) (string, bool) { return "", false }

func TestFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(b, noEnv)
			if strings.HasSuffix(f, ".good.yaml") {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# error: ")
			if !ok {
				t.Fatalf("bad fixture must start with '# error: <message>'")
			}
			if err == nil {
				t.Fatalf("want error %q, got none", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
		})
	}
}

func TestShippedConfigIsValid(t *testing.T) {
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
		if got := string(Expand([]byte(c.in), lookup)); got != c.want {
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
	r := Retry{MaxAttempts: 5, BackoffBaseSec: 2, BackoffMultiplier: 2}
	for n, want := range map[int]float64{1: 2, 2: 4, 3: 8, 4: 16} {
		if got := r.Delay(n).Seconds(); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestValidationNamesEveryProblem(t *testing.T) {
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
