package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestNormalizePath(t *testing.T) {
	cases := []struct{ raw, want string }{
		{"/api/v1/partners/reports", "/api/v1/partners/reports"},
		{"/api/v1/partners//reports", "/api/v1/partners/reports"},
		{"/api/v1/partners/./reports", "/api/v1/partners/reports"},
		{"/api/v1/partners/%72eports", "/api/v1/partners/reports"},
		{"/api/v1/partners/x/../reports", "/api/v1/partners/reports"},
		{"/api/v1/partners/%2e%2E/partners/reports", "/api/v1/partners/reports"},
		{"//api///v1/partners/orders/?page=2", "/api/v1/partners/orders/"},
		{"/api/v1/partners/a%3bb", "/api/v1/partners/a%3Bb"}, // reserved: kept encoded
		{"/../../etc/passwd", "/etc/passwd"},
		{"/api/v1/partners/orders/.", "/api/v1/partners/orders/"},
		{"/", "/"},
	}
	for _, c := range cases {
		got, err := authz.NormalizePath(c.raw)
		if err != nil || got != c.want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", c.raw, got, err, c.want)
		}
		again, _ := authz.NormalizePath(got)
		if again != got {
			t.Errorf("not idempotent: %q -> %q -> %q", c.raw, got, again)
		}
	}
	for _, bad := range []string{"", "api", "/a%2Fb", "/a%2fb", "/a%5Cb", `/a\b`, "/a%zz", "/a%4", "/a b", "/a\x00b", "/a#frag", "/caf\xc3\xa9"} {
		if _, err := authz.NormalizePath(bad); !errors.Is(err, authz.ErrBadPath) {
			t.Errorf("NormalizePath(%q) accepted", bad)
		}
	}
}

// TestPathBypassRefused: a tenant without the reports feature is refused
// the reports routes whatever spelling of the path reaches the plugin — the
// path Envoy forwards after its normalisation (normalize_path,
// merge_slashes) and the raw path, should a listener not normalise.
func TestPathBypassRefused(t *testing.T) {
	p := startPlugin(t)
	without := tenant("tn_nofeat", schemas.TierStandard, schemas.StatusActive)
	without.Features = nil
	keyWithout := p.addTenant(without)
	keyWith := p.addTenant(tenant("tn_feat", schemas.TierStandard, schemas.StatusActive))

	cases := []struct{ raw, envoy string }{
		{"/api/v1/partners//reports", "/api/v1/partners/reports"},
		{"/api/v1/partners/./reports", "/api/v1/partners/reports"},
		{"/api/v1/partners/%72eports", "/api/v1/partners/reports"},
		{"/api/v1/partners/x/../reports", "/api/v1/partners/reports"},
		{"/api/v1/partners//reports/daily?x=1", "/api/v1/partners/reports/daily?x=1"},
		{"/api/v1/partners/REPORTS", "/api/v1/partners/REPORTS"},
		{"/api/v1/partners/bulk/../reports/x", "/api/v1/partners/reports/x"},
	}
	for _, c := range cases {
		for _, path := range []string{c.raw, c.envoy} {
			r := p.check(envoyRequest{path: path, headers: bearer(keyWithout)})
			if status(r) != 403 || !strings.Contains(r.GetDeniedResponse().GetBody(), "feature reports") {
				t.Errorf("%q without the flag: status %d %s, want 403 feature reports", path, status(r), r.GetDeniedResponse().GetBody())
			}
			if s := status(p.check(envoyRequest{path: path, headers: bearer(keyWith)})); s != 200 {
				t.Errorf("%q with the flag: status %d", path, s)
			}
		}
	}
	// Spellings Envoy refuses itself (400) are refused by the plugin too.
	for _, path := range []string{"/api/v1/partners/%2freports", "/api/v1/partners/..%2Freports", `/api/v1/partners/\reports`, "/api/v1/partners/%zz"} {
		r := p.check(envoyRequest{path: path, headers: bearer(keyWith)})
		if status(r) != 400 || deniedHeader(r, "content-type") != "application/problem+json" {
			t.Errorf("%q: status %d, want 400", path, status(r))
		}
	}
	// Normalised out of the API: 404.
	if s := status(p.check(envoyRequest{path: "/api/v1/partners/../../admin", headers: bearer(keyWith)})); s != 404 {
		t.Errorf("path leaving the API: %d, want 404", s)
	}
}

// certs is a test PKI: an enterprise CA and client certificates it signs.
type certs struct {
	t      *testing.T
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newCerts(t *testing.T) *certs {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "enterprise CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &certs{t: t, ca: ca, caKey: key, serial: 1}
}

// client returns a client certificate as Envoy forwards it
// (include_peer_certificate: URL-encoded PEM).
func (c *certs) client(cn string, uris []string, dns []string) string {
	c.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(c.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: dns,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			c.t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		c.t.Fatal(err)
	}
	return url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// TestClientIdentityBound: on the mutual-TLS listener every certificate
// the enterprise CA signed passes Envoy's handshake; the plugin accepts an
// enterprise tenant's request only with a certificate of an identity the
// tenant registered (URI or DNS SAN), as Envoy forwards it (the certificate,
// or only the principal).
func TestClientIdentityBound(t *testing.T) {
	p := startPlugin(t)
	pki := newCerts(t)
	acme := tenant("tn_acme", schemas.TierEnterprise, schemas.StatusActive)
	acme.ClientIdentities = []string{"spiffe://acme.example/orders-sync", "Client.Acme.Example"}
	acmeKey := p.addTenant(acme)
	globex := tenant("tn_globex", schemas.TierEnterprise, schemas.StatusActive)
	globex.ClientIdentities = []string{"spiffe://globex.example/client"}
	p.addTenant(globex)
	unregistered := tenant("tn_noids", schemas.TierEnterprise, schemas.StatusActive)
	noIDsKey := p.addTenant(unregistered)

	acmeURI := pki.client("acme-sync", []string{"spiffe://acme.example/orders-sync"}, nil)
	acmeDNS := pki.client("acme-host", nil, []string{"client.acme.example"})
	globexCert := pki.client("globex", []string{"spiffe://globex.example/client"}, []string{"client.globex.example"})
	path := "/api/v1/partners/orders"
	cases := []struct {
		name       string
		key        string
		cert, prin string
		status     int
		detail     string
	}{
		{"acme's URI SAN", acmeKey, acmeURI, "spiffe://acme.example/orders-sync", 200, ""},
		{"acme's DNS SAN, other case", acmeKey, acmeDNS, "client.acme.example", 200, ""},
		{"globex's valid certificate with acme's key", acmeKey, globexCert, "spiffe://globex.example/client", 403, "not one registered"},
		{"globex's principal only", acmeKey, "", "spiffe://globex.example/client", 403, "not one registered"},
		{"acme's principal only", acmeKey, "", "spiffe://acme.example/orders-sync", 200, ""},
		{"no certificate", acmeKey, "", "", 403, "must present a client certificate"},
		{"garbage certificate", acmeKey, "-----BEGIN%20CERTIFICATE-----%0AMIIB%0A", "spiffe://acme.example/orders-sync", 403, "cannot be read"},
		{"tenant without identities", noIDsKey, acmeURI, "spiffe://acme.example/orders-sync", 403, "no client certificate identity is registered"},
	}
	for _, c := range cases {
		r := p.check(envoyRequest{path: path, headers: bearer(c.key), certificate: c.cert, principal: c.prin})
		if status(r) != c.status || !strings.Contains(r.GetDeniedResponse().GetBody(), c.detail) {
			t.Errorf("%s: status %d %s, want %d ~%q", c.name, status(r), r.GetDeniedResponse().GetBody(), c.status, c.detail)
		}
	}
}

// TestRateLimitHeadersAndMetadata: every allowed request carries the
// rate-limit key and shield class; only a tenant with its own limit carries
// dynamic metadata, in the shape the routes' limit overrides read; an
// invalid override falls back to the tier and is counted once.
func TestRateLimitHeadersAndMetadata(t *testing.T) {
	p := startPlugin(t)
	plain := p.addTenant(tenant("tn_plain", schemas.TierSandbox, schemas.StatusActive))
	own := tenant("tn_own", schemas.TierStandard, schemas.StatusActive)
	own.RateLimit = &schemas.RateLimit{RequestsPerMinute: 900, BurstSize: 4}
	ownKey := p.addTenant(own)
	broken := tenant("tn_broken", schemas.TierStandard, schemas.StatusActive)
	broken.RateLimit = &schemas.RateLimit{RequestsPerMinute: -1, BurstSize: 0}
	brokenKey := p.addTenant(broken)

	okHeaders := func(key string) (map[string]string, map[string]any) {
		t.Helper()
		r := p.check(envoyRequest{path: "/api/v1/partners/orders", headers: bearer(key)})
		if r.GetOkResponse() == nil {
			t.Fatalf("denied: %v", r.GetDeniedResponse())
		}
		h := map[string]string{}
		for _, o := range r.GetOkResponse().GetHeaders() {
			h[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
		}
		return h, r.GetDynamicMetadata().AsMap()
	}
	h, md := okHeaders(plain)
	if h[schemas.HeaderRateLimitKey] != "tn_plain" || h[schemas.HeaderShieldClass] != "c5" || len(md) != 0 {
		t.Errorf("tier tenant: headers %v metadata %v (sandbox 20/min burst 5 is shield class c5)", h, md)
	}
	h, md = okHeaders(ownKey)
	want := map[string]any{schemas.MetadataRateLimit: map[string]any{
		schemas.MetadataWindowMinute: map[string]any{"requests_per_unit": 900.0, "unit": "MINUTE"},
		schemas.MetadataWindowSecond: map[string]any{"requests_per_unit": 15.0, "unit": "SECOND"}, // 900/60 > burst 4
	}}
	if h[schemas.HeaderShieldClass] != "c10" || !equalJSON(md, want) {
		t.Errorf("own limit: class %s metadata %v, want c10 and %v", h[schemas.HeaderShieldClass], md, want)
	}
	for i := 0; i < 3; i++ {
		h, md = okHeaders(brokenKey)
	}
	if h[schemas.HeaderShieldClass] != "c6" || len(md) != 0 {
		t.Errorf("invalid override: class %s metadata %v, want the standard tier's (c6, none)", h[schemas.HeaderShieldClass], md)
	}
	if n := p.metric("partners_edge_tenant_config_issues_total", "outcome", "tier_default"); n != 1 {
		t.Errorf("%v config issues counted, want 1 (once per tenant version)", n)
	}
}

func equalJSON(a, b map[string]any) bool {
	return strings.EqualFold(strings.TrimSpace(toJSON(a)), strings.TrimSpace(toJSON(b)))
}

// TestShieldClass: the class is never smaller than the limit, in rate or
// burst, and at most twice it in rate for tiers' sizes.
func TestShieldClass(t *testing.T) {
	for _, l := range [][2]int{{20, 5}, {60, 10}, {300, 50}, {1, 1}, {7, 200}, {1_000_000, 1_000_000}, {90, 15}} {
		rl := schemas.RateLimit{RequestsPerMinute: l[0], BurstSize: l[1]}
		k := schemas.ShieldClass(rl)
		perMin := schemas.ShieldTokens(k) * 60 / schemas.ShieldFillSeconds
		if perMin < rl.RequestsPerMinute || schemas.ShieldTokens(k) < rl.BurstSize {
			t.Errorf("%+v: class %d allows %d/min, bucket %d: smaller than the limit", rl, k, perMin, schemas.ShieldTokens(k))
		}
		if rl.RequestsPerMinute >= 4*rl.BurstSize && rl.RequestsPerMinute >= 4 && perMin >= 2*rl.RequestsPerMinute {
			t.Errorf("%+v: class %d allows %d/min, twice the limit or more", rl, k, perMin)
		}
	}
}

// TestServeOwnsTheSubscription: New subscribes to nothing; Serve
// subscribes and unsubscribes when it stops.
func TestServeOwnsTheSubscription(t *testing.T) {
	cfg := testenv.Config(t)
	tenants := newFakeTenants()
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: tenants, Producer: &sink{}, Names: kafka.Names{},
		Log: (&testenv.LogBuffer{}).Logger(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if n := tenants.subscribers(); n != 0 {
		t.Fatalf("New subscribed %d watchers", n)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	testenv.Eventually(t, 5*time.Second, "Serve subscribed", func() bool { return tenants.subscribers() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := tenants.subscribers(); n != 0 {
		t.Fatalf("%d watchers after Serve returned", n)
	}
	// Registering the metrics twice is an error, not a panic.
	reg := prometheus.NewRegistry()
	for i, wantErr := range []bool{false, true} {
		_, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: tenants, Producer: &sink{}, Log: (&testenv.LogBuffer{}).Logger(t), Registerer: reg})
		if (err != nil) != wantErr {
			t.Fatalf("New #%d with one registry: err %v", i+1, err)
		}
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestServerTLS: with edge.server_tls and a client CA the plugin answers
// only Envoys holding a certificate of that CA.
func TestServerTLS(t *testing.T) {
	cfg := testenv.Config(t)
	pki := testenv.NewPKI(t, "edge grpc CA")
	srvCert := pki.Server("edge")
	cfg.Edge.ServerTLS = config.ServerTLS{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, ClientCAFile: pki.CAFile}
	tenants := newFakeTenants()
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: tenants, Producer: &sink{}, Log: (&testenv.LogBuffer{}).Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()
	check := func(tc *tls.Config) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = authv3.NewAuthorizationClient(conn).Check(ctx, envoyRequest{path: "/api/v1/partners/x"}.proto())
		return err
	}
	envoy := pki.Client("envoy", nil, []string{"envoy.partners.example"})
	if err := check(&tls.Config{RootCAs: pki.Pool(), Certificates: []tls.Certificate{envoy.Pair}}); err != nil {
		t.Fatalf("Envoy with a client certificate: %v", err)
	}
	if err := check(&tls.Config{RootCAs: pki.Pool()}); err == nil {
		t.Fatal("a client without a certificate got an answer")
	}
}
