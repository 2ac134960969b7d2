package config

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/partners-engine/partners-engine/internal/seal"
	"github.com/partners-engine/partners-engine/internal/ssrf"
	"github.com/partners-engine/partners-engine/schemas"
)

// Each section's Validate checks the section's own fields; nested sections
// check themselves (Validate walks them all). Messages never repeat a key
// path: the walk derives it from the yaml tags.

var (
	featureRe    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	headerRe     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	instanceIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	// eventTypeRe is the shape of a product event type (schemas/json/event.v1).
	eventTypeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)
	identRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	regionRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// Validate implements Validator.
func (g *Gateway) Validate() error {
	c := Check(g)
	c.OneOf(&g.Auth, "bearer")
	c.Positive(&g.TenantResolutionTTL)
	c.Positive(&g.CacheSize)
	c.NonNegative(&g.NegativeTTL)
	if !strings.HasPrefix(g.APIPrefix, "/") || !strings.HasSuffix(g.APIPrefix, "/") {
		c.Fail(&g.APIPrefix, "must start and end with /")
	}
	for i := range g.FeatureRoutes {
		fr := &g.FeatureRoutes[i]
		if !strings.HasPrefix(fr.Prefix, g.APIPrefix) || len(fr.Prefix) <= len(g.APIPrefix) {
			c.Fail(&fr.Prefix, "must be a longer path under partner.gateway.api_prefix")
		}
		if !featureRe.MatchString(fr.Feature) {
			c.Fail(&fr.Feature, "must be lower-case letters, digits and underscores")
		}
	}
	return c.Err()
}

// Validate implements Validator.
func (r *RateLimit) Validate() error {
	c := Check(r)
	c.Positive(&r.RequestsPerMinute)
	c.Positive(&r.BurstSize)
	return c.Err()
}

// Validate implements Validator.
func (r *RateLimits) Validate() error {
	c := Check(r)
	for tier := range r.Tiers {
		if !slices.Contains(schemas.Tiers, tier) {
			c.FailValue(&r.Tiers, tier, "must be one of "+strings.Join(schemas.Tiers, ", "))
		}
	}
	return c.Err()
}

// Validate implements Validator.
func (w *Webhooks) Validate() error {
	c := Check(w)
	c.Positive(&w.Concurrency)
	c.Positive(&w.PerEndpoint)
	c.Positive(&w.MaxEventBytes)
	c.Positive(&w.MaxBodyBytes)
	for i := range w.AllowPrivate {
		if _, err := ssrf.ParseRules(w.AllowPrivate[i : i+1]); err != nil {
			c.Fail(&w.AllowPrivate[i], "must name an address, CIDR or host and a port, like 127.0.0.1:9999, 10.0.0.0/8:443 or hooks.internal:8443")
		}
	}
	c.Positive(&w.PerTenant)
	c.Positive(&w.TestPerTenant)
	c.Positive(&w.MaxPayloadBytes)
	// A retry record carries the body base64-encoded (4/3 of its size).
	if need := max(w.MaxEventBytes, w.MaxPayloadBytes)*4/3 + 64<<10; w.MaxRecordBytes < need {
		c.Fail(&w.MaxRecordBytes, fmt.Sprintf("must be at least 4/3 max(max_event_bytes, max_payload_bytes) + 64 KiB = %d, so every retry and DLQ record fits", need))
	}
	c.Positive(&w.FIFOWindow)
	c.NonNegative(&w.SecretOverlap)
	if len(w.EventTypes) == 0 {
		c.Fail(&w.EventTypes, "must list at least one event type")
	}
	for i := range w.EventTypes {
		if !eventTypeRe.MatchString(w.EventTypes[i]) {
			c.Fail(&w.EventTypes[i], "must be an event type like order.created")
		}
	}
	if w.InstanceID != "" && !instanceIDRe.MatchString(w.InstanceID) {
		c.Fail(&w.InstanceID, "must be 1 to 64 letters, digits, '.', '_' or '-'")
	}
	c.NonNegative(&w.MaxRetryAfter)
	return c.Err()
}

// Validate implements Validator.
func (r *Retry) Validate() error {
	c := Check(r)
	c.Between(&r.MaxAttempts, 1, 20)
	c.NonNegative(&r.BackoffBase)
	if r.BackoffMultiplier < 1 {
		c.Fail(&r.BackoffMultiplier, "must be >= 1")
	}
	c.NonNegative(&r.BackoffMax)
	c.NonNegative(&r.MaxAge)
	return c.Err()
}

// Validate implements Validator.
func (r *Recovery) Validate() error {
	c := Check(r)
	if r.RatePerSec <= 0 {
		c.Fail(&r.RatePerSec, "must be > 0")
	}
	c.Positive(&r.Burst)
	return c.Err()
}

// Validate implements Validator.
func (d *DLQ) Validate() error {
	c := Check(d)
	if d.Enabled {
		c.Positive(&d.Retention)
	}
	return c.Err()
}

// Validate implements Validator.
func (t *Timeouts) Validate() error {
	c := Check(t)
	c.Positive(&t.Connect)
	c.Positive(&t.Total)
	if t.Connect > t.Total {
		c.Fail(&t.Connect, "must not exceed total_sec")
	}
	return c.Err()
}

// Validate implements Validator.
func (b *Breaker) Validate() error {
	c := Check(b)
	c.Positive(&b.ConsecutiveFailures)
	c.Positive(&b.Open)
	if b.MaxOpen != 0 && b.MaxOpen < b.Open {
		c.Fail(&b.MaxOpen, "must be >= open_sec (0: open_sec)")
	}
	return c.Err()
}

// Validate implements Validator.
func (a *Attribution) Validate() error {
	c := Check(a)
	for i := range a.TouchpointSources {
		c.OneOf(&a.TouchpointSources[i], "utm", "referral_header", "api_key")
	}
	wholeDays(c, &a.ROIWindow, 1, 3650)
	wholeDays(c, &a.Lookback, 1, 3650)
	c.Positive(&a.MaterializedViewRefresh)
	c.Positive(&a.TimeDecayHalfLife)
	if len(a.BaseCurrency) != 3 || strings.ToUpper(a.BaseCurrency) != a.BaseCurrency {
		c.Fail(&a.BaseCurrency, "must be an ISO 4217 code like USD")
	}
	if _, ok := a.CurrencyRates[a.BaseCurrency]; !ok && a.BaseCurrency != "" {
		c.FailValue(&a.CurrencyRates, a.BaseCurrency, "must contain the base currency")
	}
	for cur, r := range a.CurrencyRates {
		d, err := decimal.NewFromString(r)
		if err != nil || !d.IsPositive() {
			c.FailKey(&a.CurrencyRates, cur, r, "must be a positive decimal")
		}
	}
	c.Positive(&a.HistoryCacheSize)
	if a.MaxRecordBytes < 1024 || a.MaxRecordBytes > 1<<20 {
		c.Fail(&a.MaxRecordBytes, "must be between 1024 and 1048576")
	}
	c.Between(&a.Workers, 1, 64)
	if a.DLQMaxPayloadBytes < 1024 || a.DLQMaxPayloadBytes > 512<<10 {
		c.Fail(&a.DLQMaxPayloadBytes, "must be between 1024 and 524288 (a dead letter must fit a Kafka record)")
	}
	return c.Err()
}

// Validate implements Validator.
func (r *Reconcile) Validate() error {
	c := Check(r)
	c.NonNegative(&r.Interval)
	c.Between(&r.Days, 1, 3650)
	return c.Err()
}

func wholeDays(c *Checker, d *time.Duration, lo, hi int) {
	if *d%Day != 0 || *d < time.Duration(lo)*Day || *d > time.Duration(hi)*Day {
		c.Fail(d, fmt.Sprintf("must be between %d and %d", lo, hi))
	}
}

// Validate implements Validator.
func (b *Batch) Validate() error {
	c := Check(b)
	c.Positive(&b.Size)
	c.Positive(&b.Linger)
	return c.Err()
}

// Validate implements Validator.
func (e *Enterprise) Validate() error {
	c := Check(e)
	c.OneOf(&e.MTLS, "enabled", "disabled")
	c.OneOf(&e.JWTSigningAlgo, "RS256")
	c.OneOf(&e.AuditLogging, "enabled", "disabled")
	return c.Err()
}

// Validate implements Validator.
func (k *Keys) Validate() error {
	c := Check(k)
	c.NonNegative(&k.RotationOverlap)
	c.Secret(&k.Pepper, 16, "PARTNERS_KEY_PEPPER")
	seen := map[string]bool{}
	for i := range k.SecretKeys {
		sk := &k.SecretKeys[i]
		if seen[sk.ID] || sk.ID == PepperKeyID {
			c.Fail(&sk.ID, "is a duplicate (\"pepper\" is the derived key's id)")
		}
		seen[sk.ID] = true
	}
	if k.ActiveSecretKey != "" && !seen[k.ActiveSecretKey] {
		c.Fail(&k.ActiveSecretKey, "must be the id of one of partner.keys.secret_keys")
	}
	return c.Err()
}

// Validate implements Validator.
func (k *SecretKey) Validate() error {
	c := Check(k)
	if !seal.KeyIDRe.MatchString(k.ID) {
		c.Fail(&k.ID, "must be 1 to 32 letters, digits, '.', '_' or '-'")
	}
	if k.Key == "" {
		c.Fail(&k.Key, "is a required secret and is empty (set the variable of its placeholder)")
	}
	if k.Key != "" {
		if _, err := seal.ParseKey(k.Key); err != nil {
			c.Fail(&k.Key, err.Error())
		}
	}
	return c.Err()
}

// PepperKeyID is the id of the sealing key derived from the pepper.
const PepperKeyID = "pepper"

// Keyring returns the keys that seal and open webhook secrets: the
// configured ones and the one derived from the pepper, the active key
// sealing.
func (k Keys) Keyring() (*seal.Keyring, error) {
	derived, err := hkdf.Key(sha256.New, []byte(k.Pepper), nil, "partners-engine webhook secrets v1", seal.KeySize)
	if err != nil {
		return nil, fmt.Errorf("partner.keys: derive the sealing key: %w", err)
	}
	keys := map[string][]byte{PepperKeyID: derived}
	active := PepperKeyID
	for i, sk := range k.SecretKeys {
		raw, err := seal.ParseKey(sk.Key)
		if err != nil {
			return nil, fmt.Errorf("partner.keys.secret_keys[%d].key: %w", i, err)
		}
		keys[sk.ID] = raw
		if i == 0 {
			active = sk.ID
		}
	}
	if k.ActiveSecretKey != "" {
		active = k.ActiveSecretKey
	}
	return seal.New(active, keys)
}

// Validate implements Validator.
func (k *Kafka) Validate() error {
	c := Check(k)
	for i := range k.Brokers {
		c.HostPort(&k.Brokers[i], true)
	}
	c.Positive(&k.Partitions)
	c.Positive(&k.Replication)
	c.NonNegative(&k.MinInsyncReplicas)
	if k.MinInsyncReplicas > k.Replication && k.Replication > 0 {
		c.Fail(&k.MinInsyncReplicas, fmt.Sprintf("must not exceed kafka.replication_factor (%d): every acks=all write would fail with NOT_ENOUGH_REPLICAS", k.Replication))
	}
	if len(k.Brokers) == 0 && k.EmbeddedPort < 0 {
		c.Fail(&k.EmbeddedPort, "must be >= 0")
	}
	if k.SASL.Mechanism == SASLPlain && !k.TLS.Enabled {
		c.Fail(&k.SASL.Mechanism, "sends the password in the clear: enable kafka.tls or use SCRAM-SHA-512")
	}
	return c.Err()
}

// The SASL mechanisms of kafka.sasl.mechanism.
const (
	SASLScramSHA512 = "SCRAM-SHA-512"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLPlain       = "PLAIN"
)

// Validate implements Validator.
func (t *KafkaTLS) Validate() error {
	c := Check(t)
	if !t.Enabled {
		for _, f := range []*string{&t.CAFile, &t.CertFile, &t.KeyFile, &t.ServerName} {
			if *f != "" {
				c.Fail(f, "is set but kafka.tls.enabled is false")
			}
		}
		return c.Err()
	}
	if t.CAFile != "" {
		if b, err := os.ReadFile(t.CAFile); err != nil {
			c.Fail(&t.CAFile, "cannot be read: "+pathError(err))
		} else if !x509.NewCertPool().AppendCertsFromPEM(b) {
			c.Fail(&t.CAFile, "holds no PEM certificate")
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		c.Fail(&t.CertFile, "and kafka.tls.key_file must be set together")
	} else if t.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			c.Fail(&t.CertFile, "with kafka.tls.key_file is not a usable certificate and key: "+pathError(err))
		}
	}
	return c.Err()
}

func pathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Validate implements Validator.
func (s *KafkaSASL) Validate() error {
	c := Check(s)
	if s.Mechanism == "" {
		if s.Username != "" || s.Password != "" {
			c.Fail(&s.Mechanism, "must be set when kafka.sasl.username or password is (SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN)")
		}
		return c.Err()
	}
	c.OneOf(&s.Mechanism, SASLScramSHA512, SASLScramSHA256, SASLPlain)
	if s.Username == "" {
		c.Fail(&s.Username, "must not be empty with kafka.sasl.mechanism set")
	}
	c.Secret(&s.Password, 1, "PARTNERS_KAFKA_SASL_PASSWORD")
	return c.Err()
}

// Validate implements Validator.
func (ch *ClickHouse) Validate() error {
	c := Check(ch)
	if len(ch.Addr) == 0 {
		c.Fail(&ch.Addr, "must list at least one host:port")
	}
	for i := range ch.Addr {
		c.HostPort(&ch.Addr[i], true)
	}
	if !identRe.MatchString(ch.Database) {
		c.Fail(&ch.Database, "must be an identifier")
	}
	if ch.Cluster != "" && !identRe.MatchString(ch.Cluster) {
		c.Fail(&ch.Cluster, "must be empty (one server) or a cluster name of the servers' remote_servers")
	}
	c.Positive(&ch.DialTimeout)
	return c.Err()
}

// Validate implements Validator.
func (l *Listeners) Validate() error {
	c := Check(l)
	c.HostPort(&l.Admin, true)
	c.HostPort(&l.XDS, true)
	c.HostPort(&l.ExtAuthz, true)
	return c.Err()
}

// Regions are the edge regions.
type Regions []Region

// Validate implements Validator.
func (rs *Regions) Validate() error {
	c := Check(rs)
	if len(*rs) == 0 {
		c.Fail(rs, "must list at least one region")
	}
	seen := map[string]bool{}
	for i := range *rs {
		r := &(*rs)[i]
		if seen[r.Name] {
			c.Fail(&r.Name, "is a duplicate")
		}
		seen[r.Name] = true
	}
	return c.Err()
}

// Validate implements Validator.
func (r *Region) Validate() error {
	c := Check(r)
	if !regionRe.MatchString(r.Name) {
		c.Fail(&r.Name, "must be lower-case letters, digits and dashes")
	}
	c.HostPort(&r.ProductionUpstream, true)
	c.HostPort(&r.SandboxUpstream, true)
	return c.Err()
}

// Validate implements Validator.
func (t *Telemetry) Validate() error {
	c := Check(t)
	c.OneOf(&t.LogLevel, "debug", "info", "warn", "error")
	c.OneOf(&t.LogFormat, "text", "json")
	return c.Err()
}

// Validate implements Validator.
func (a *Admin) Validate() error {
	c := Check(a)
	c.Secret(&a.Token, 8, "PARTNERS_ADMIN_TOKEN")
	if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.Fail(&a.URL, "must be an http(s) URL")
	}
	return c.Err()
}

// Validate implements Validator.
func (u *UI) Validate() error {
	c := Check(u)
	if u.SessionIdle < time.Minute || u.SessionIdle > 24*time.Hour {
		c.Fail(&u.SessionIdle, "must be between 1m and 24h")
	}
	if u.SessionMax < u.SessionIdle || u.SessionMax > 7*24*time.Hour {
		c.Fail(&u.SessionMax, "must be at least ui.session_idle_timeout and at most 168h")
	}
	if u.PortalLinkTTL < time.Minute || u.PortalLinkTTL > 7*24*time.Hour {
		c.Fail(&u.PortalLinkTTL, "must be between 1m and 168h")
	}
	if u.WebhooksAPI != "" {
		if p, err := url.Parse(u.WebhooksAPI); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.User != nil {
			c.Fail(&u.WebhooksAPI, "must be an http(s) URL like http://webhooks:8080")
		}
	}
	return c.Err()
}

// Validate implements Validator.
func (x *XDS) Validate() error {
	c := Check(x)
	c.Positive(&x.ExtAuthzTimeout)
	c.HostPort(&x.ExtAuthzCluster, true)
	c.Positive(&x.CacheSize)
	c.Port(&x.ListenerPort)
	if x.EnterpriseListenerPort <= 0 || x.EnterpriseListenerPort > 65535 || x.EnterpriseListenerPort == x.ListenerPort {
		c.Fail(&x.EnterpriseListenerPort, "must be a port number other than xds.listener_port")
	}
	c.Positive(&x.UpstreamTimeout)
	c.Positive(&x.ConnectTimeout)
	if x.OverloadRetryAfter <= 0 || x.OverloadRetryAfter%time.Second != 0 {
		c.Fail(&x.OverloadRetryAfter, "must be a whole number of seconds > 0")
	}
	c.NonNegative(&x.RebuildDebounce)
	return c.Err()
}

// Validate implements Validator.
func (t *EdgeTLS) Validate() error {
	c := Check(t)
	for _, p := range []*string{&t.ServerCertPath, &t.ServerKeyPath, &t.ClientCAPath} {
		if !strings.HasPrefix(*p, "/") {
			c.Fail(p, "must be an absolute path on the Envoy host")
		}
	}
	return c.Err()
}

// Validate implements Validator.
func (t *EdgeTracing) Validate() error {
	c := Check(t)
	c.HostPort(&t.CollectorAddress, false)
	if t.SamplePercent < 0 || t.SamplePercent > 100 {
		c.Fail(&t.SamplePercent, "must be between 0 and 100")
	}
	return c.Err()
}

// Validate implements Validator.
func (cb *CircuitBreakers) Validate() error {
	c := Check(cb)
	c.Positive(&cb.MaxConnections)
	c.Positive(&cb.MaxPendingRequests)
	c.Positive(&cb.MaxRequests)
	return c.Err()
}

// Validate implements Validator.
func (e *Edge) Validate() error {
	c := Check(e)
	if e.UserHeader == "" {
		c.Fail(&e.UserHeader, "must not be empty")
	}
	for _, h := range []*string{&e.UserHeader, &e.JWTHeader, &e.ReferralHeader} {
		if *h != "" && !headerRe.MatchString(*h) {
			c.Fail(h, "must be a lower-case HTTP header name")
		}
	}
	if e.JWTHeader == "" || e.JWTHeader == "authorization" {
		c.Fail(&e.JWTHeader, "must name a header other than authorization")
	}
	c.Positive(&e.TouchpointBuffer)
	c.Positive(&e.MaxAuthHeaderBytes)
	return c.Err()
}

// Validate implements Validator.
func (s *EdgeSpool) Validate() error {
	c := Check(s)
	c.NonNegative(&s.MaxBytes)
	c.NonNegative(&s.MaxAge)
	if s.Dir != "" && s.MaxBytes == 0 {
		c.Fail(&s.MaxBytes, "must be > 0 with a spool dir (empty dir: no spool)")
	}
	return c.Err()
}
