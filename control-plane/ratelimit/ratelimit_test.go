package ratelimit_test

import (
	"strings"
	"testing"

	rlsconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/partners-engine/partners-engine/control-plane/ratelimit"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

func limitsOf(c *rlsconf.RateLimitConfig) map[string][2]uint32 {
	out := map[string][2]uint32{}
	for _, tier := range c.GetDescriptors() {
		var got [2]uint32
		for _, w := range tier.GetDescriptors()[0].GetDescriptors() {
			switch w.GetValue() {
			case schemas.MetadataWindowMinute:
				got[0] = w.GetRateLimit().GetRequestsPerUnit()
			case schemas.MetadataWindowSecond:
				got[1] = w.GetRateLimit().GetRequestsPerUnit()
			}
		}
		out[tier.GetValue()] = got
	}
	return out
}

// TestConfigMapsTiers: every tier gets a minute window of its
// requests_per_minute and a second window of its burst_size (raised to the
// per-second rate when the burst is smaller); a tier without its own limits
// gets partner.rate_limit.default.
func TestConfigMapsTiers(t *testing.T) {
	limits := config.Default().Partner.RateLimit
	limits.Tiers = map[string]config.RateLimit{
		"sandbox":    {RequestsPerMinute: 20, BurstSize: 5},
		"enterprise": {RequestsPerMinute: 6000, BurstSize: 50}, // 100/s > burst 50
	}
	c := ratelimit.Config(limits)
	if err := ratelimit.Validate(c); err != nil {
		t.Fatal(err)
	}
	if c.GetDomain() != "partners" || c.GetName() != "partners" {
		t.Fatalf("domain %q name %q", c.GetDomain(), c.GetName())
	}
	want := map[string][2]uint32{"sandbox": {20, 5}, "standard": {60, 10}, "enterprise": {6000, 100}}
	got := limitsOf(c)
	for tier, w := range want {
		if got[tier] != w {
			t.Errorf("tier %s: %v, want %v", tier, got[tier], w)
		}
	}
	for _, d := range c.GetDescriptors() {
		tenant := d.GetDescriptors()[0]
		if d.GetKey() != schemas.DescriptorTier || tenant.GetKey() != schemas.DescriptorTenant || tenant.GetValue() != "" {
			t.Fatalf("descriptor tree of %s: %v", d.GetValue(), d)
		}
	}
}

func TestStage(t *testing.T) {
	svc := config.Default().Partner.RateLimit.Service
	if ratelimit.Stage(svc, schemas.TierSandbox) != ratelimit.StageFailClosed || ratelimit.Stage(svc, schemas.TierStandard) != ratelimit.StageFailOpen ||
		ratelimit.Stage(svc, schemas.TierEnterprise) != ratelimit.StageFailOpen {
		t.Fatalf("default failure policy: sandbox closed, standard and enterprise open; got %v", svc.FailClosedTiers)
	}
}

func TestValidateRefuses(t *testing.T) {
	good := func() *rlsconf.RateLimitConfig { return ratelimit.Config(config.Default().Partner.RateLimit) }
	cases := map[string]func(c *rlsconf.RateLimitConfig){
		"no domain": func(c *rlsconf.RateLimitConfig) { c.Domain = "" },
		"no key":    func(c *rlsconf.RateLimitConfig) { c.Descriptors[0].Key = "" },
		"duplicate": func(c *rlsconf.RateLimitConfig) { c.Descriptors = append(c.Descriptors, c.Descriptors[0]) },
		"zero limit": func(c *rlsconf.RateLimitConfig) {
			c.Descriptors[1].Descriptors[0].Descriptors[1].RateLimit.RequestsPerUnit = 0
		},
		"unknown unit": func(c *rlsconf.RateLimitConfig) { c.Descriptors[2].Descriptors[0].Descriptors[0].RateLimit.Unit = 0 },
	}
	for name, breakIt := range cases {
		c := good()
		breakIt(c)
		if err := ratelimit.Validate(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestYAML(t *testing.T) {
	y := ratelimit.YAML(ratelimit.Config(config.Default().Partner.RateLimit))
	for _, want := range []string{"domain: partners\n", "- key: tier\n    value: sandbox\n", "- key: tenant\n",
		"value: minute\n", "rate_limit: {unit: minute, requests_per_unit: 20}", "rate_limit: {unit: second, requests_per_unit: 5}"} {
		if !strings.Contains(y, want) {
			t.Errorf("YAML lacks %q:\n%s", want, y)
		}
	}
}
