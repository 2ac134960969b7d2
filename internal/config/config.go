// Package config owns the configuration of partners-engine, the way
// opentelemetry-collector does it: one struct per section with its defaults
// in code (Default) and its own Validate, composed into Config at the top.
// Load parses the YAML, expands ${env:NAME:-default} placeholders on the
// parsed values (never in the text), decodes strictly (unknown keys are
// errors) and validates every section; each error names the key path, taken
// from the yaml tags, and the bad value. Durations are time.Duration fields
// decoded from the seed's unit-suffixed numbers (backoff_base_sec: 2).
// DevOnly lists what only `partners dev` may run with (the development
// admin token and pepper, REPLACE_ME placeholders). Components receive
// their own sections, never the whole Config. `partners config check` runs
// exactly this code.
package config

import (
	"slices"
	"strings"
	"time"
)

// DefaultPath is where the binary looks for its configuration.
const DefaultPath = "config/partners-engine.yaml"

// Config is the whole configuration. YAML keys are the snake_case tags.
// Fields tagged config:"secret" are never shown in messages.
type Config struct {
	Partner    Partner    `yaml:"partner"`
	Kafka      Kafka      `yaml:"kafka"`
	ClickHouse ClickHouse `yaml:"clickhouse"`
	Listeners  Listeners  `yaml:"listeners"`
	Regions    Regions    `yaml:"regions"`
	Telemetry  Telemetry  `yaml:"telemetry"`
	Admin      Admin      `yaml:"admin"`
	XDS        XDS        `yaml:"xds"`
	Edge       Edge       `yaml:"edge"`
	UI         UI         `yaml:"ui"`

	// sources maps key paths to the ${env:...} text their value came from.
	sources map[string]string
}

// Partner holds the seed's template.
type Partner struct {
	Gateway     Gateway     `yaml:"gateway"`
	RateLimit   RateLimits  `yaml:"rate_limit"`
	Webhooks    Webhooks    `yaml:"webhooks"`
	Attribution Attribution `yaml:"attribution"`
	Security    Security    `yaml:"security"`
	Keys        Keys        `yaml:"keys"`
}

// Gateway configures tenant resolution at the edge.
type Gateway struct {
	Auth string `yaml:"auth"` // only "bearer"
	// TenantResolutionTTL is how long the edge caches key hash → tenant.
	TenantResolutionTTL time.Duration `yaml:"tenant_resolution_ttl_sec"`
	CacheSize           int           `yaml:"cache_size"`
	// NegativeTTL is how long an unknown key is remembered as unknown.
	NegativeTTL time.Duration `yaml:"negative_ttl_sec"`
	// APIPrefix is the path prefix of the partner API at the edge.
	APIPrefix string `yaml:"api_prefix"`
	// FeatureRoutes gate path prefixes under APIPrefix behind tenant feature
	// flags: a tenant reaches Prefix only with Features[Feature] = true. The
	// control plane emits routes only for enabled features and the edge
	// plugin answers 403 for the others.
	FeatureRoutes []FeatureRoute `yaml:"feature_routes"`
}

// FeatureRoute is a path prefix reserved to tenants with a feature flag.
type FeatureRoute struct {
	Prefix  string `yaml:"prefix"`
	Feature string `yaml:"feature"`
}

// FeatureNames returns the feature flags of the feature routes, sorted and
// without duplicates: the flags a tenant may set.
func (g Gateway) FeatureNames() []string {
	out := []string{}
	for _, fr := range g.FeatureRoutes {
		if !slices.Contains(out, fr.Feature) {
			out = append(out, fr.Feature)
		}
	}
	slices.Sort(out)
	return out
}

// FeatureFor returns the feature flag that gates path, if any. The longest
// matching prefix wins.
func (g Gateway) FeatureFor(path string) (string, bool) {
	best := -1
	feature := ""
	for _, fr := range g.FeatureRoutes {
		if strings.HasPrefix(path, fr.Prefix) && len(fr.Prefix) > best {
			best, feature = len(fr.Prefix), fr.Feature
		}
	}
	return feature, best >= 0
}

// RateLimit is a token bucket.
type RateLimit struct {
	RequestsPerMinute int `yaml:"requests_per_minute"`
	BurstSize         int `yaml:"burst_size"`
}

// RateLimits holds the default bucket and per-tier buckets, and the global
// rate-limit service that enforces them across a region's Envoys.
type RateLimits struct {
	Default RateLimit            `yaml:"default"`
	Tiers   map[string]RateLimit `yaml:"tiers"`
	Service RateLimitService     `yaml:"service"`
}

// ForTier returns the tier's bucket, or the default.
func (r RateLimits) ForTier(tier string) RateLimit {
	if rl, ok := r.Tiers[tier]; ok {
		return rl
	}
	return r.Default
}

// Webhooks configures the webhooks processor.
type Webhooks struct {
	Retry         Retry    `yaml:"retry"`
	DLQ           DLQ      `yaml:"dlq"`
	Timeouts      Timeouts `yaml:"timeouts"`
	Concurrency   int      `yaml:"concurrency"` // in-flight requests overall
	PerEndpoint   int      `yaml:"per_endpoint_concurrency"`
	MaxBodyBytes  int64    `yaml:"max_response_body_bytes"`
	MaxEventBytes int      `yaml:"max_event_bytes"`
	// AllowPrivate are the private addresses webhook URLs may reach despite
	// the SSRF guard: each entry names an address, CIDR or host name and a
	// port or port range ("10.0.0.0/8:443", "127.0.0.1:9900-9999",
	// "[fd00::/8]:8443", "hooks.internal:443"); an entry may hold several,
	// separated by commas.
	AllowPrivate []string `yaml:"allow_private_networks"`
	Breaker      Breaker  `yaml:"circuit_breaker"`
	// SecretOverlap is how long a rotated webhook secret keeps signing.
	SecretOverlap time.Duration `yaml:"secret_rotation_overlap_sec"`
	// EventTypes are the product event types the processor accepts; an event
	// of any other type is dead-lettered with reason "unknown event type".
	EventTypes []string `yaml:"event_types"`
	// MaxRetryAfter caps how long a 429's Retry-After may hold a delivery.
	MaxRetryAfter time.Duration `yaml:"max_retry_after_sec"`
	// InstanceID names this processor instance in its Kafka transactional
	// ids. It must be stable across restarts (a restarted instance fences
	// its crashed predecessor's open transactions at once) and unique among
	// running instances. Empty: the host name.
	InstanceID string `yaml:"instance_id"`
	// PerTenant caps the requests one tenant has in flight, its share of
	// Concurrency, whatever its number of endpoints.
	PerTenant int `yaml:"per_tenant_concurrency"`
	// TestPerTenant caps the concurrent test calls
	// (POST /api/v1/partners/webhooks/test) of one tenant; more answer 429.
	TestPerTenant int `yaml:"test_calls_per_tenant"`
	// MaxPayloadBytes bounds the body rendered for an endpoint (a payload
	// mapping may copy a field many times); a larger rendering is a render
	// error, dead-lettered with the event.
	MaxPayloadBytes int `yaml:"max_payload_bytes"`
	// MaxRecordBytes is the largest record the processor produces (retry,
	// DLQ); keep it under the broker's message.max.bytes.
	MaxRecordBytes int `yaml:"max_record_bytes"`
	// Recovery bounds how fast an endpoint's backlog drains after its
	// circuit breaker closes again.
	Recovery Recovery `yaml:"recovery"`
	// FIFOWindow bounds the messages of ordered (FIFO) endpoints held in
	// memory per partition of partners.webhooks.fifo.
	FIFOWindow int `yaml:"fifo_window"`
}

// Retry is the retry policy. Attempt n+1 (n>=1) waits
// min(backoff_base·backoff_multiplier^(n-1), backoff_max) after attempt n,
// in topic partners.webhooks.retry.<n>. A delivery is dead-lettered after
// max_attempts HTTP attempts, or once it is older than max_age; deliveries
// held by an open circuit breaker, a Retry-After or a FIFO predecessor
// consume no attempt.
type Retry struct {
	MaxAttempts       int           `yaml:"max_attempts"`
	BackoffBase       time.Duration `yaml:"backoff_base_sec"`
	BackoffMultiplier float64       `yaml:"backoff_multiplier"`
	// BackoffMax caps the delay of one retry topic (0: no cap).
	BackoffMax time.Duration `yaml:"backoff_max_sec"`
	// MaxAge is how long after its first attempt a delivery may still be
	// retried or held (0: no limit).
	MaxAge time.Duration `yaml:"max_age_sec"`
}

// Delay returns the fixed delay of retry topic n (1-based):
// min(base·mult^(n-1), backoff_max).
func (r Retry) Delay(n int) time.Duration {
	d := float64(r.BackoffBase)
	for i := 1; i < n; i++ {
		d *= r.BackoffMultiplier
		if r.BackoffMax > 0 && d >= float64(r.BackoffMax) {
			break
		}
	}
	if r.BackoffMax > 0 && d > float64(r.BackoffMax) {
		return r.BackoffMax
	}
	return time.Duration(d)
}

// DLQ configures the dead-letter topic.
type DLQ struct {
	Enabled   bool          `yaml:"enabled"`
	Retention time.Duration `yaml:"retention_days"`
}

// Timeouts of one webhook HTTP attempt.
type Timeouts struct {
	Connect time.Duration `yaml:"connect_sec"`
	Total   time.Duration `yaml:"total_sec"`
}

// Breaker configures the per-endpoint circuit breaker: it opens after
// consecutive_failures retryable failures for open_sec, doubling after
// every failed half-open probe up to max_open_sec.
type Breaker struct {
	ConsecutiveFailures int           `yaml:"consecutive_failures"`
	Open                time.Duration `yaml:"open_sec"`
	MaxOpen             time.Duration `yaml:"max_open_sec"`
}

// Recovery is the drain rate of an endpoint's backlog once its breaker
// closed again, until the backlog is gone.
type Recovery struct {
	RatePerSec float64 `yaml:"rate_per_sec"`
	Burst      int     `yaml:"burst"`
}

// Attribution configures the attribution processor and ROI.
type Attribution struct {
	TouchpointSources []string `yaml:"touchpoint_sources"`
	// ROIWindow is the default ROI window, whole days.
	ROIWindow time.Duration `yaml:"roi_window_days"`
	// Lookback is how far before a conversion touchpoints count.
	Lookback                time.Duration     `yaml:"lookback_days"`
	MaterializedViewRefresh time.Duration     `yaml:"materialized_view_refresh_sec"`
	TimeDecayHalfLife       time.Duration     `yaml:"time_decay_half_life_days"`
	BaseCurrency            string            `yaml:"base_currency"`
	CurrencyRates           map[string]string `yaml:"currency_rates"` // currency -> base per unit, decimal string
	Batch                   Batch             `yaml:"batch"`
	HistoryCacheSize        int               `yaml:"history_cache_size"`
	// MaxRecordBytes is the largest record value the processor decodes;
	// larger ones go to the DLQ.
	MaxRecordBytes int `yaml:"max_record_bytes"`
	// DLQMaxPayloadBytes bounds the copy of a record in its dead letter;
	// a larger record is copied truncated, with its size and SHA-256.
	DLQMaxPayloadBytes int `yaml:"dlq_max_payload_bytes"`
	// Reconcile configures the periodic check that roi_daily equals the
	// raw tables.
	Reconcile Reconcile `yaml:"reconcile"`
	// Workers is how many members of the consumer group one processor
	// runs: each handles its own partitions' batches, so one's ClickHouse
	// round trips overlap another's work (at most kafka.partitions are
	// busy).
	Workers int `yaml:"workers"`
}

// Reconcile configures the attribution processor's reconciliation: every
// Interval it compares roi_daily with the same figures computed from the
// raw tables, per (model, day, partner), for the last Days UTC days.
type Reconcile struct {
	Interval time.Duration `yaml:"interval_sec"` // 0: off
	Days     int           `yaml:"days"`
}

// ROIWindowDays is the default ROI window in days.
func (a Attribution) ROIWindowDays() int { return int(a.ROIWindow / Day) }

// Day is the unit of the *_days keys.
const Day = 24 * time.Hour

// Batch configures ClickHouse batching.
type Batch struct {
	Size   int           `yaml:"size"`
	Linger time.Duration `yaml:"linger_sec"`
}

// Security configures tier security.
type Security struct {
	Enterprise Enterprise `yaml:"enterprise"`
}

// Enterprise security.
type Enterprise struct {
	MTLS           string `yaml:"mtls"` // enabled|disabled
	JWTSigningAlgo string `yaml:"jwt_signing_algo"`
	AuditLogging   string `yaml:"audit_logging"` // enabled|disabled
}

// Keys configures API key hashing and rotation, and the keys that seal
// webhook secrets in the tenants topic.
type Keys struct {
	Pepper string `yaml:"pepper" config:"secret"` // HMAC key for API key hashes; from env
	// RotationOverlap is how long a rotated API key stays valid.
	RotationOverlap time.Duration `yaml:"rotation_overlap_sec"`
	// SecretKeys are the AES-256 keys that seal webhook secrets in the
	// tenants topic (internal/seal). Every listed key opens; the active
	// one seals. Without any, a key derived from the pepper seals (id
	// "pepper"); that derived key always stays available for opening, so
	// records sealed with it remain readable after explicit keys arrive.
	SecretKeys []SecretKey `yaml:"secret_keys"`
	// ActiveSecretKey is the id of the key new writes seal with; empty:
	// the first of SecretKeys.
	ActiveSecretKey string `yaml:"active_secret_key"`
}

// SecretKey is one webhook-secret sealing key.
type SecretKey struct {
	ID  string `yaml:"id"`
	Key string `yaml:"key" config:"secret"` // base64 of 32 bytes (openssl rand -base64 32)
}

// Kafka configures brokers and topics.
type Kafka struct {
	Brokers      []string `yaml:"brokers"`  // empty: the embedded broker
	DataDir      string   `yaml:"data_dir"` // embedded broker state
	EmbeddedPort int      `yaml:"embedded_port"`
	Partitions   int      `yaml:"partitions"`
	Replication  int      `yaml:"replication_factor"`
	// MinInsyncReplicas is the min.insync.replicas of every topic the
	// platform creates: with acks=all (every producer here) a write succeeds
	// only once that many replicas have it, so a broker that dies right
	// after acknowledging loses nothing. 0 leaves the broker's default. On a
	// cluster use replication_factor 3 and min_insync_replicas 2: one broker
	// may be down without refusing writes.
	MinInsyncReplicas int    `yaml:"min_insync_replicas"`
	ClientID          string `yaml:"client_id"`
	GroupPrefix       string `yaml:"group_prefix"`
	TopicPrefix       string `yaml:"topic_prefix"` // prepended to every topic name (tests)
	// TLS and SASL apply to every Kafka client of the process (producers,
	// consumers, transactional stages, the admin client).
	TLS  KafkaTLS  `yaml:"tls"`
	SASL KafkaSASL `yaml:"sasl"`
}

// KafkaTLS configures TLS to the brokers (a SSL or SASL_SSL listener).
type KafkaTLS struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the brokers'
	// certificates; empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate and its key (PEM), for
	// brokers that require mutual TLS; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name checked in the brokers' certificates; empty:
	// the host of each broker address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any broker certificate; only `partners
	// dev` runs with it.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// KafkaSASL configures SASL authentication to the brokers (a SASL_PLAINTEXT
// or SASL_SSL listener).
type KafkaSASL struct {
	// Mechanism is "" (no SASL), SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN
	// (PLAIN only over TLS: it sends the password).
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password" config:"secret"`
}

// ClickHouse configures the warehouse connection.
type ClickHouse struct {
	Addr        []string      `yaml:"addr"`
	Database    string        `yaml:"database"`
	Username    string        `yaml:"username"`
	Password    string        `yaml:"password" config:"secret"`
	AutoStart   bool          `yaml:"auto_start"` // partners dev only: start deploy/local/clickhouse.sh if unreachable
	DialTimeout time.Duration `yaml:"dial_timeout_sec"`
	// Cluster, when set, is the name of a cluster in the servers'
	// <remote_servers> (every node of Addr belongs to it): migrations run
	// ON CLUSTER, every table is a Replicated*MergeTree "<name>_local" on
	// each shard (ZooKeeper path /clickhouse/tables/{shard}/<database>/<name>_local,
	// replica {replica}: the servers need those macros) with a Distributed
	// table "<name>" over it for reads and writes. Empty: one server.
	// schemas/clickhouse/README.md, "Cluster mode".
	Cluster string `yaml:"cluster"`
}

// Listeners are the addresses the components listen on.
type Listeners struct {
	Admin    string `yaml:"admin"`
	XDS      string `yaml:"xds"`
	ExtAuthz string `yaml:"ext_authz"`
}

// Region is one edge region.
type Region struct {
	Name               string `yaml:"name"`
	ProductionUpstream string `yaml:"production_upstream"` // host:port
	SandboxUpstream    string `yaml:"sandbox_upstream"`
}

// Telemetry configures logs, traces and metrics. Traces and metrics follow
// the standard OTEL_* environment variables; an OTLP exporter is created only
// when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces one) is set.
type Telemetry struct {
	LogLevel    string `yaml:"log_level"`
	LogFormat   string `yaml:"log_format"` // text|json
	ServiceName string `yaml:"service_name"`
}

// Admin configures the admin API.
type Admin struct {
	Token string `yaml:"token" config:"secret"`
	URL   string `yaml:"url"` // where the CLI reaches the API
}

// UI configures the partner portal and operator console (package web),
// served at /ui/ on listeners.admin by `partners dev` and `partners
// control-plane`.
type UI struct {
	Enabled bool `yaml:"enabled"`
	// SessionIdle ends a signed-in session after this long without a
	// request; SessionMax ends it this long after sign-in, whatever happens.
	SessionIdle time.Duration `yaml:"session_idle_timeout"`
	SessionMax  time.Duration `yaml:"session_max_age"`
	// PortalLinkTTL is how long a portal link an operator issues works (once).
	PortalLinkTTL time.Duration `yaml:"portal_link_ttl"`
	// SecureCookies marks the session cookie Secure on a plain-HTTP listener
	// too: set it when a TLS-terminating proxy is in front (on TLS the cookie
	// is always Secure).
	SecureCookies bool `yaml:"secure_cookies"`
	// WebhooksAPI is the admin API of the webhooks process (http://host:port):
	// where `partners control-plane` lists and replays the DLQ for the UI.
	// Empty: the control plane's UI has no DLQ pages. `partners dev` runs the
	// processor itself and ignores it.
	WebhooksAPI string `yaml:"webhooks_api"`
}

// XDS configures snapshot building.
type XDS struct {
	ExtAuthzTimeout  time.Duration    `yaml:"ext_authz_timeout_ms"`
	ExtAuthzCluster  string           `yaml:"ext_authz_address"` // host:port Envoy reaches the edge plugin at
	CircuitBreakers  CircuitBreakers  `yaml:"circuit_breakers"`
	OutlierDetection OutlierDetection `yaml:"outlier_detection"`
	CacheSize        int              `yaml:"cache_size"`
	ListenerPort     int              `yaml:"listener_port"`
	// EnterpriseListenerPort is the listener that requires client
	// certificates (the plugin binds their identity to the tenant).
	EnterpriseListenerPort int `yaml:"enterprise_listener_port"`
	// TLS names the certificate files on the Envoy hosts; the control plane
	// serves them to Envoy as SDS secrets that point at these paths, so no
	// private key ever crosses the xDS stream.
	TLS             EdgeTLS       `yaml:"tls"`
	UpstreamTimeout time.Duration `yaml:"upstream_timeout_ms"`
	ConnectTimeout  time.Duration `yaml:"connect_timeout_ms"`
	// OverloadRetryAfter is the Retry-After (whole seconds) of the fast 503
	// when an upstream overflows.
	OverloadRetryAfter time.Duration `yaml:"overload_retry_after_sec"`
	// RebuildDebounce coalesces bursts of tenant changes into one snapshot
	// per region.
	RebuildDebounce time.Duration `yaml:"rebuild_debounce_ms"`
	// Tracing makes Envoy trace partner requests and export spans over OTLP
	// gRPC; empty collector_address: Envoy does not trace (the plugin still
	// continues a traceparent the partner sends).
	Tracing EdgeTracing `yaml:"tracing"`
	// ServerTLS is the xDS server's own TLS: mutual TLS, so only Envoys and
	// rate-limit services holding a certificate of client_ca_file get
	// configuration. Empty: plaintext (loopback development).
	ServerTLS MutualTLS `yaml:"server_tls"`
	// GRPCTLS is how Envoy connects to ext_authz and the rate-limit service.
	GRPCTLS EnvoyGRPCTLS `yaml:"grpc_tls"`
}

// EdgeTracing configures Envoy's OpenTelemetry tracer.
type EdgeTracing struct {
	CollectorAddress string  `yaml:"collector_address"` // host:port of an OTLP gRPC receiver, as Envoy reaches it
	SamplePercent    float64 `yaml:"sample_percent"`
}

// EdgeTLS are paths on the Envoy host.
type EdgeTLS struct {
	ServerCertPath string `yaml:"server_cert_path"`
	ServerKeyPath  string `yaml:"server_key_path"`
	ClientCAPath   string `yaml:"client_ca_path"`
}

// CircuitBreakers for upstream clusters.
type CircuitBreakers struct {
	MaxConnections     int `yaml:"max_connections"`
	MaxPendingRequests int `yaml:"max_pending_requests"`
	MaxRequests        int `yaml:"max_requests"`
	MaxRetries         int `yaml:"max_retries"`
}

// OutlierDetection for upstream clusters.
type OutlierDetection struct {
	Consecutive5xx     int           `yaml:"consecutive_5xx"`
	Interval           time.Duration `yaml:"interval_sec"`
	BaseEjection       time.Duration `yaml:"base_ejection_sec"`
	MaxEjectionPercent int           `yaml:"max_ejection_percent"`
}

// Edge configures the ext_authz plugin.
type Edge struct {
	UserHeader         string `yaml:"user_header"`
	UserQueryParam     string `yaml:"user_query_param"`
	TouchpointBuffer   int    `yaml:"touchpoint_buffer"`
	MaxAuthHeaderBytes int    `yaml:"max_authorization_bytes"`
	// JWTHeader carries the enterprise tenants' RS256 JWT (Authorization
	// holds the API key).
	JWTHeader string `yaml:"jwt_header"`
	// ReferralHeader is read into the touchpoint's referrer.
	ReferralHeader string `yaml:"referral_header"`
	// ServerTLS is the ext_authz server's TLS; with client_ca_file only
	// Envoys holding a certificate that CA signed may ask it.
	ServerTLS ServerTLS `yaml:"server_tls"`
	// Spool keeps the records Kafka cannot take on local disk and replays
	// them (edge/spool).
	Spool EdgeSpool `yaml:"spool"`
}

// EdgeSpool is the edge's local spool of touchpoint and audit records that
// Kafka could not take (an outage longer than the producer's retries, a
// producer buffer that stays full, a shutdown while Kafka is down).
type EdgeSpool struct {
	// Dir holds the spool; processes sharing it each take a slot of their
	// own (per Kafka topic prefix), a restarted one the slot of one that
	// died. Empty: no spool, such records are dropped and counted.
	Dir string `yaml:"dir"`
	// MaxBytes bounds the spool on disk; beyond it records are dropped and
	// counted.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxAge drops spooled records older than this at replay (0: never).
	MaxAge time.Duration `yaml:"max_age_sec"`
}

// Default returns the configuration with every default set.
func Default() Config {
	return Config{
		Partner: Partner{
			Gateway: Gateway{Auth: "bearer", TenantResolutionTTL: 45 * time.Second, CacheSize: 100_000, NegativeTTL: 5 * time.Second,
				APIPrefix: "/api/v1/partners/",
				FeatureRoutes: []FeatureRoute{
					{Prefix: "/api/v1/partners/reports", Feature: "reports"},
					{Prefix: "/api/v1/partners/bulk", Feature: "bulk_export"},
				}},
			RateLimit: RateLimits{
				Default: RateLimit{RequestsPerMinute: 60, BurstSize: 10},
				Tiers: map[string]RateLimit{
					"sandbox":    {RequestsPerMinute: 20, BurstSize: 5},
					"enterprise": {RequestsPerMinute: 300, BurstSize: 50},
				},
				Service: RateLimitService{Address: "127.0.0.1:18081", Domain: "partners", Timeout: 100 * time.Millisecond,
					FailClosedTiers: []string{"sandbox"}, ShieldMaxTenants: 20_000},
			},
			Webhooks: Webhooks{
				// See config/partners-engine.yaml for why these defaults.
				Retry: Retry{MaxAttempts: 8, BackoffBase: 5 * time.Second, BackoffMultiplier: 4,
					BackoffMax: time.Hour, MaxAge: 72 * time.Hour},
				DLQ:             DLQ{Enabled: true, Retention: 30 * Day},
				Timeouts:        Timeouts{Connect: 3 * time.Second, Total: 10 * time.Second},
				Concurrency:     256,
				PerEndpoint:     16,
				MaxBodyBytes:    64 << 10,
				MaxEventBytes:   256 << 10,
				Breaker:         Breaker{ConsecutiveFailures: 5, Open: 30 * time.Second, MaxOpen: 5 * time.Minute},
				SecretOverlap:   24 * time.Hour,
				EventTypes:      []string{"order.created", "order.updated", "order.completed", "order.refunded", "customer.created", "lead.qualified", "partner.test"},
				MaxRetryAfter:   time.Hour,
				PerTenant:       64,
				TestPerTenant:   2,
				MaxPayloadBytes: 256 << 10,
				MaxRecordBytes:  1_000_000,
				Recovery:        Recovery{RatePerSec: 50, Burst: 50},
				FIFOWindow:      1000,
			},
			Attribution: Attribution{
				TouchpointSources:       []string{"utm", "referral_header", "api_key"},
				ROIWindow:               30 * Day,
				Lookback:                30 * Day,
				MaterializedViewRefresh: 5 * time.Minute,
				TimeDecayHalfLife:       7 * Day,
				BaseCurrency:            "USD",
				CurrencyRates:           map[string]string{"USD": "1", "EUR": "1.08", "GBP": "1.27"},
				Batch:                   Batch{Size: 20_000, Linger: time.Second},
				HistoryCacheSize:        100_000,
				MaxRecordBytes:          64 << 10,
				DLQMaxPayloadBytes:      64 << 10,
				Reconcile:               Reconcile{Interval: 5 * time.Minute, Days: 35},
				Workers:                 3, // one per partition of Kafka.Partitions
			},
			Security: Security{Enterprise: Enterprise{MTLS: "enabled", JWTSigningAlgo: "RS256", AuditLogging: "enabled"}},
			Keys:     Keys{RotationOverlap: 24 * time.Hour},
		},
		Kafka: Kafka{
			DataDir:      ".local/kfake",
			EmbeddedPort: 19092,
			Partitions:   3,
			Replication:  1,
			ClientID:     "partners-engine",
			GroupPrefix:  "partners",
		},
		ClickHouse: ClickHouse{
			Addr:        []string{"127.0.0.1:9000"},
			Database:    "partners",
			Username:    "default",
			DialTimeout: 5 * time.Second,
		},
		Listeners: Listeners{Admin: "127.0.0.1:8080", XDS: "127.0.0.1:18000", ExtAuthz: "127.0.0.1:9191"},
		Regions: []Region{
			{Name: "us-east", ProductionUpstream: "127.0.0.1:8443", SandboxUpstream: "127.0.0.1:8444"},
			{Name: "eu-west", ProductionUpstream: "127.0.0.1:8443", SandboxUpstream: "127.0.0.1:8444"},
		},
		Telemetry: Telemetry{LogLevel: "info", LogFormat: "text", ServiceName: "partners-engine"},
		Admin:     Admin{URL: "http://127.0.0.1:8080"},
		XDS: XDS{
			ExtAuthzTimeout:        250 * time.Millisecond,
			ExtAuthzCluster:        "127.0.0.1:9191",
			CircuitBreakers:        CircuitBreakers{MaxConnections: 1024, MaxPendingRequests: 256, MaxRequests: 1024, MaxRetries: 3},
			OutlierDetection:       OutlierDetection{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjection: 30 * time.Second, MaxEjectionPercent: 50},
			CacheSize:              50_000,
			ListenerPort:           10000,
			EnterpriseListenerPort: 10443,
			TLS: EdgeTLS{
				ServerCertPath: "/etc/envoy/certs/edge.crt",
				ServerKeyPath:  "/etc/envoy/certs/edge.key",
				ClientCAPath:   "/etc/envoy/certs/enterprise-ca.crt",
			},
			UpstreamTimeout:    15 * time.Second,
			ConnectTimeout:     time.Second,
			OverloadRetryAfter: time.Second,
			RebuildDebounce:    20 * time.Millisecond,
			Tracing:            EdgeTracing{SamplePercent: 100},
			GRPCTLS: EnvoyGRPCTLS{CAPath: "/etc/envoy/grpc/ca.crt", CertPath: "/etc/envoy/grpc/envoy.crt",
				KeyPath: "/etc/envoy/grpc/envoy.key"},
		},
		Edge: Edge{UserHeader: "x-partner-user-id", UserQueryParam: "uid", TouchpointBuffer: 10_000, MaxAuthHeaderBytes: 4096,
			JWTHeader: "x-partner-jwt", ReferralHeader: "referer",
			Spool: EdgeSpool{Dir: ".local/edge-spool", MaxBytes: 1 << 30, MaxAge: 7 * Day}},
		UI: UI{Enabled: true, SessionIdle: 30 * time.Minute, SessionMax: 8 * time.Hour, PortalLinkTTL: 15 * time.Minute},
	}
}

// RegionNames returns the configured region names.
func (c *Config) RegionNames() []string { return c.Regions.Names() }

// Region returns the named region.
func (c *Config) Region(name string) (Region, bool) { return c.Regions.Get(name) }

// Names returns the region names, in order.
func (rs Regions) Names() []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name
	}
	return out
}

// Get returns the named region.
func (rs Regions) Get(name string) (Region, bool) {
	for _, r := range rs {
		if r.Name == name {
			return r, true
		}
	}
	return Region{}, false
}
