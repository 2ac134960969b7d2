package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"

	"github.com/partners-engine/partners-engine/schemas"
)

// placeholder matches ${env:NAME} and ${env:NAME:-default}.
var placeholder = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// Expand replaces ${env:NAME:-default} placeholders using lookup.
func Expand(in []byte, lookup func(string) (string, bool)) []byte {
	return placeholder.ReplaceAllFunc(in, func(m []byte) []byte {
		sub := placeholder.FindSubmatch(m)
		if v, ok := lookup(string(sub[1])); ok && v != "" {
			return []byte(v)
		}
		return sub[3]
	})
}

// Load reads path, expands placeholders from the environment, decodes it
// strictly over the defaults and validates the result.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, os.LookupEnv)
}

// Parse is Load on bytes with an explicit environment.
func Parse(b []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(Expand(b, lookup)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// ValidationError lists every invalid key with its value.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string {
	return "config: invalid:\n  " + strings.Join(e.Problems, "\n  ")
}

type checker struct{ problems []string }

func (c *checker) fail(path string, value any, why string) {
	c.problems = append(c.problems, fmt.Sprintf("%s: %s (got %q)", path, why, fmt.Sprint(value)))
}

func (c *checker) positive(path string, v int) {
	if v <= 0 {
		c.fail(path, v, "must be > 0")
	}
}

func (c *checker) positiveF(path string, v float64) {
	if v <= 0 {
		c.fail(path, v, "must be > 0")
	}
}

func (c *checker) hostPort(path, v string, required bool) {
	if v == "" {
		if required {
			c.fail(path, v, "must be host:port")
		}
		return
	}
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		c.fail(path, v, "must be host:port")
	}
}

func (c *checker) oneOf(path, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		c.fail(path, v, "must be one of "+strings.Join(allowed, ", "))
	}
}

func (c *checker) rateLimit(path string, rl RateLimit) {
	c.positive(path+".requests_per_minute", rl.RequestsPerMinute)
	c.positive(path+".burst_size", rl.BurstSize)
}

var (
	featureRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	headerRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// Validate checks every value and reports all problems at once, each naming
// its key path and value.
// eventTypeRe is the shape of a product event type (schemas/json/event.v1).
var instanceIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

var eventTypeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)

func (cfg *Config) Validate() error {
	c := &checker{}
	p := cfg.Partner
	c.oneOf("partner.gateway.auth", p.Gateway.Auth, "bearer")
	c.positive("partner.gateway.tenant_resolution_ttl_sec", p.Gateway.TenantResolutionTTLSec)
	c.positive("partner.gateway.cache_size", p.Gateway.CacheSize)
	if p.Gateway.NegativeTTLSec < 0 {
		c.fail("partner.gateway.negative_ttl_sec", p.Gateway.NegativeTTLSec, "must be >= 0")
	}
	if !strings.HasPrefix(p.Gateway.APIPrefix, "/") || !strings.HasSuffix(p.Gateway.APIPrefix, "/") {
		c.fail("partner.gateway.api_prefix", p.Gateway.APIPrefix, "must start and end with /")
	}
	for i, fr := range p.Gateway.FeatureRoutes {
		path := fmt.Sprintf("partner.gateway.feature_routes[%d]", i)
		if !strings.HasPrefix(fr.Prefix, p.Gateway.APIPrefix) || len(fr.Prefix) <= len(p.Gateway.APIPrefix) {
			c.fail(path+".prefix", fr.Prefix, "must be a longer path under partner.gateway.api_prefix")
		}
		if !featureRe.MatchString(fr.Feature) {
			c.fail(path+".feature", fr.Feature, "must be lower-case letters, digits and underscores")
		}
	}
	c.rateLimit("partner.rate_limit.default", p.RateLimit.Default)
	for tier, rl := range p.RateLimit.Tiers {
		c.oneOf("partner.rate_limit.tiers", tier, schemas.Tiers...)
		c.rateLimit("partner.rate_limit.tiers."+tier, rl)
	}
	w := p.Webhooks
	if w.Retry.MaxAttempts < 1 || w.Retry.MaxAttempts > 20 {
		c.fail("partner.webhooks.retry.max_attempts", w.Retry.MaxAttempts, "must be between 1 and 20")
	}
	if w.Retry.BackoffBaseSec < 0 {
		c.fail("partner.webhooks.retry.backoff_base_sec", w.Retry.BackoffBaseSec, "must be >= 0")
	}
	if w.Retry.BackoffMultiplier < 1 {
		c.fail("partner.webhooks.retry.backoff_multiplier", w.Retry.BackoffMultiplier, "must be >= 1")
	}
	if w.DLQ.Enabled {
		c.positive("partner.webhooks.dlq.retention_days", w.DLQ.RetentionDays)
	}
	c.positiveF("partner.webhooks.timeouts.connect_sec", w.Timeouts.ConnectSec)
	c.positiveF("partner.webhooks.timeouts.total_sec", w.Timeouts.TotalSec)
	if w.Timeouts.ConnectSec > w.Timeouts.TotalSec {
		c.fail("partner.webhooks.timeouts.connect_sec", w.Timeouts.ConnectSec, "must not exceed total_sec")
	}
	c.positive("partner.webhooks.concurrency", w.Concurrency)
	c.positive("partner.webhooks.per_endpoint_concurrency", w.PerEndpoint)
	c.positive("partner.webhooks.max_event_bytes", w.MaxEventBytes)
	if w.MaxBodyBytes <= 0 {
		c.fail("partner.webhooks.max_response_body_bytes", w.MaxBodyBytes, "must be > 0")
	}
	for i, cidr := range w.AllowPrivate {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			c.fail(fmt.Sprintf("partner.webhooks.allow_private_networks[%d]", i), cidr, "must be a CIDR like 127.0.0.1/32")
		}
	}
	c.positive("partner.webhooks.circuit_breaker.consecutive_failures", w.Breaker.ConsecutiveFailures)
	c.positiveF("partner.webhooks.circuit_breaker.open_sec", w.Breaker.OpenSec)
	if w.SecretOverlapSec < 0 {
		c.fail("partner.webhooks.secret_rotation_overlap_sec", w.SecretOverlapSec, "must be >= 0")
	}
	if len(w.EventTypes) == 0 {
		c.fail("partner.webhooks.event_types", "[]", "must list at least one event type")
	}
	for i, et := range w.EventTypes {
		if !eventTypeRe.MatchString(et) {
			c.fail(fmt.Sprintf("partner.webhooks.event_types[%d]", i), et, "must be an event type like order.created")
		}
	}
	if w.InstanceID != "" && !instanceIDRe.MatchString(w.InstanceID) {
		c.fail("partner.webhooks.instance_id", w.InstanceID, "must be 1 to 64 letters, digits, '.', '_' or '-'")
	}
	if w.MaxRetryAfterSec < 0 {
		c.fail("partner.webhooks.max_retry_after_sec", w.MaxRetryAfterSec, "must be >= 0")
	}

	a := p.Attribution
	for i, s := range a.TouchpointSources {
		c.oneOf(fmt.Sprintf("partner.attribution.touchpoint_sources[%d]", i), s, "utm", "referral_header", "api_key")
	}
	if a.ROIWindowDays < 1 || a.ROIWindowDays > 3650 {
		c.fail("partner.attribution.roi_window_days", a.ROIWindowDays, "must be between 1 and 3650")
	}
	if a.LookbackDays < 1 || a.LookbackDays > 3650 {
		c.fail("partner.attribution.lookback_days", a.LookbackDays, "must be between 1 and 3650")
	}
	c.positive("partner.attribution.materialized_view_refresh_sec", a.MaterializedViewRefreshSec)
	c.positiveF("partner.attribution.time_decay_half_life_days", a.TimeDecayHalfLifeDays)
	if len(a.BaseCurrency) != 3 || strings.ToUpper(a.BaseCurrency) != a.BaseCurrency {
		c.fail("partner.attribution.base_currency", a.BaseCurrency, "must be an ISO 4217 code like USD")
	}
	if _, ok := a.CurrencyRates[a.BaseCurrency]; !ok && a.BaseCurrency != "" {
		c.fail("partner.attribution.currency_rates", a.BaseCurrency, "must contain the base currency")
	}
	for cur, r := range a.CurrencyRates {
		d, err := decimal.NewFromString(r)
		if err != nil || !d.IsPositive() {
			c.fail("partner.attribution.currency_rates."+cur, r, "must be a positive decimal")
		}
	}
	c.positive("partner.attribution.batch.size", a.Batch.Size)
	c.positiveF("partner.attribution.batch.linger_sec", a.Batch.LingerSec)
	c.positive("partner.attribution.history_cache_size", a.HistoryCacheSize)

	e := p.Security.Enterprise
	c.oneOf("partner.security.enterprise.mtls", e.MTLS, "enabled", "disabled")
	c.oneOf("partner.security.enterprise.jwt_signing_algo", e.JWTSigningAlgo, "RS256")
	c.oneOf("partner.security.enterprise.audit_logging", e.AuditLogging, "enabled", "disabled")
	if p.Keys.RotationOverlapSec < 0 {
		c.fail("partner.keys.rotation_overlap_sec", p.Keys.RotationOverlapSec, "must be >= 0")
	}
	if len(p.Keys.Pepper) < 16 {
		c.fail("partner.keys.pepper", "<redacted>", "must be at least 16 characters")
	}

	for i, b := range cfg.Kafka.Brokers {
		c.hostPort(fmt.Sprintf("kafka.brokers[%d]", i), b, true)
	}
	c.positive("kafka.partitions", cfg.Kafka.Partitions)
	c.positive("kafka.replication_factor", cfg.Kafka.Replication)
	if len(cfg.Kafka.Brokers) == 0 && cfg.Kafka.EmbeddedPort < 0 {
		c.fail("kafka.embedded_port", cfg.Kafka.EmbeddedPort, "must be >= 0")
	}
	if len(cfg.ClickHouse.Addr) == 0 {
		c.fail("clickhouse.addr", cfg.ClickHouse.Addr, "must list at least one host:port")
	}
	for i, a := range cfg.ClickHouse.Addr {
		c.hostPort(fmt.Sprintf("clickhouse.addr[%d]", i), a, true)
	}
	if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(cfg.ClickHouse.Database) {
		c.fail("clickhouse.database", cfg.ClickHouse.Database, "must be an identifier")
	}
	if len(cfg.Admin.Token) < 8 {
		c.fail("admin.token", "<redacted>", "must be at least 8 characters (set PARTNERS_ADMIN_TOKEN)")
	}
	c.hostPort("listeners.admin", cfg.Listeners.Admin, true)
	c.hostPort("listeners.xds", cfg.Listeners.XDS, true)
	c.hostPort("listeners.ext_authz", cfg.Listeners.ExtAuthz, true)
	if len(cfg.Regions) == 0 {
		c.fail("regions", "[]", "must list at least one region")
	}
	seen := map[string]bool{}
	for i, r := range cfg.Regions {
		path := fmt.Sprintf("regions[%d]", i)
		if !regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`).MatchString(r.Name) {
			c.fail(path+".name", r.Name, "must be lower-case letters, digits and dashes")
		}
		if seen[r.Name] {
			c.fail(path+".name", r.Name, "is a duplicate")
		}
		seen[r.Name] = true
		c.hostPort(path+".production_upstream", r.ProductionUpstream, true)
		c.hostPort(path+".sandbox_upstream", r.SandboxUpstream, true)
	}
	c.oneOf("telemetry.log_level", cfg.Telemetry.LogLevel, "debug", "info", "warn", "error")
	c.oneOf("telemetry.log_format", cfg.Telemetry.LogFormat, "text", "json")
	if u, err := url.Parse(cfg.Admin.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.fail("admin.url", cfg.Admin.URL, "must be an http(s) URL")
	}
	c.positive("xds.ext_authz_timeout_ms", cfg.XDS.ExtAuthzTimeoutMS)
	c.hostPort("xds.ext_authz_address", cfg.XDS.ExtAuthzCluster, true)
	c.positive("xds.cache_size", cfg.XDS.CacheSize)
	if cfg.XDS.ListenerPort <= 0 || cfg.XDS.ListenerPort > 65535 {
		c.fail("xds.listener_port", cfg.XDS.ListenerPort, "must be a port number")
	}
	if cfg.XDS.EnterpriseListenerPort <= 0 || cfg.XDS.EnterpriseListenerPort > 65535 || cfg.XDS.EnterpriseListenerPort == cfg.XDS.ListenerPort {
		c.fail("xds.enterprise_listener_port", cfg.XDS.EnterpriseListenerPort, "must be a port number other than xds.listener_port")
	}
	for path, v := range map[string]string{"xds.tls.server_cert_path": cfg.XDS.TLS.ServerCertPath,
		"xds.tls.server_key_path": cfg.XDS.TLS.ServerKeyPath, "xds.tls.client_ca_path": cfg.XDS.TLS.ClientCAPath} {
		if !strings.HasPrefix(v, "/") {
			c.fail(path, v, "must be an absolute path on the Envoy host")
		}
	}
	c.positive("xds.upstream_timeout_ms", cfg.XDS.UpstreamTimeoutMS)
	c.positive("xds.connect_timeout_ms", cfg.XDS.ConnectTimeoutMS)
	c.positive("xds.overload_retry_after_sec", cfg.XDS.OverloadRetryAfterSec)
	c.hostPort("xds.tracing.collector_address", cfg.XDS.Tracing.CollectorAddress, false)
	if cfg.XDS.Tracing.SamplePercent < 0 || cfg.XDS.Tracing.SamplePercent > 100 {
		c.fail("xds.tracing.sample_percent", cfg.XDS.Tracing.SamplePercent, "must be between 0 and 100")
	}
	if cfg.XDS.RebuildDebounceMS < 0 {
		c.fail("xds.rebuild_debounce_ms", cfg.XDS.RebuildDebounceMS, "must be >= 0")
	}
	c.positive("xds.circuit_breakers.max_connections", cfg.XDS.CircuitBreakers.MaxConnections)
	c.positive("xds.circuit_breakers.max_pending_requests", cfg.XDS.CircuitBreakers.MaxPendingRequests)
	c.positive("xds.circuit_breakers.max_requests", cfg.XDS.CircuitBreakers.MaxRequests)
	if cfg.Edge.UserHeader == "" {
		c.fail("edge.user_header", cfg.Edge.UserHeader, "must not be empty")
	}
	for path, v := range map[string]string{"edge.user_header": cfg.Edge.UserHeader, "edge.jwt_header": cfg.Edge.JWTHeader, "edge.referral_header": cfg.Edge.ReferralHeader} {
		if v != "" && !headerRe.MatchString(v) {
			c.fail(path, v, "must be a lower-case HTTP header name")
		}
	}
	if cfg.Edge.JWTHeader == "" || cfg.Edge.JWTHeader == "authorization" {
		c.fail("edge.jwt_header", cfg.Edge.JWTHeader, "must name a header other than authorization")
	}
	c.positive("edge.touchpoint_buffer", cfg.Edge.TouchpointBuffer)
	c.positive("edge.max_authorization_bytes", cfg.Edge.MaxAuthHeaderBytes)
	if len(c.problems) > 0 {
		slices.Sort(c.problems)
		return &ValidationError{Problems: c.problems}
	}
	return nil
}
