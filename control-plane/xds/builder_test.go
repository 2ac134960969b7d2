package xds_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	lrl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenConfig is the default configuration with fixed values, so golden
// files do not depend on the environment.
func goldenConfig(t testing.TB) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Partner.Keys.Pepper = "golden-pepper-0123456789"
	cfg.Admin.Token = "golden-admin-token"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// goldenJWKS is a fixed public key (the golden files must not change from
// run to run); its private key is not needed by the builder.
const goldenJWKS = `{"keys":[{"alg":"RS256","e":"AQAB","kid":"k1","kty":"RSA","n":"wVV6VwdIbafSqjFP_5poyu4A7vt4CNQO6aKHQqfeKPwEl2dcsXZ3gL579Eu3ZkQcX9-cu-E2fkgg84EWSRMe_q9tnOiStG9m35nKFb3aKYo6s_3ukfWc6WbVg08ZxS7ZX91KLWBrXj81kN07zxDE092z5KJbGRbveY5qLxN-hzFTRugQce8lT-32Okp47rqw6bNv7fIlx2kHxsRWDdCQTwp-HPp3Mt9v71ZofcTErIu5RNLeSnJZAlRuIb7suQSLDGhrcUgRHfksjDRnF_XMKOMYOB03NjqmaX2nAtj2XlQquJfmlfmo93zyxNkf889fu8XwDuEXysCtbl_73D9uPQ","use":"sig"}]}`

func fixedTime() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }

// goldenTenants cover every shape the builder handles.
func goldenTenants() []*schemas.Tenant {
	mk := func(id, tier, status string, regions ...string) *schemas.Tenant {
		return &schemas.Tenant{SchemaVersion: "1", ID: id, Name: id, Tier: tier, Status: status, Regions: regions,
			CreatedAt: fixedTime(), UpdatedAt: fixedTime(), Version: 1}
	}
	sandbox := mk("tn_sandbox01", schemas.TierSandbox, schemas.StatusActive, "us-east", "eu-west")
	sandbox.Features = map[string]bool{"reports": true, "bulk_export": false}
	standard := mk("tn_standard1", schemas.TierStandard, schemas.StatusActive, "us-east")
	standard.RateLimit = &schemas.RateLimit{RequestsPerMinute: 90, BurstSize: 15}
	enterprise := mk("tn_enterpri1", schemas.TierEnterprise, schemas.StatusActive, "us-east", "eu-west")
	enterprise.Features = map[string]bool{"bulk_export": true, "reports": true}
	enterprise.JWT = &schemas.JWTConfig{Issuer: "https://idp.example.com", Audiences: []string{"partners-api"}, JWKS: goldenJWKS}
	suspended := mk("tn_suspend01", schemas.TierStandard, schemas.StatusSuspended, "us-east")
	pending := mk("tn_pending01", schemas.TierStandard, schemas.StatusPending, "us-east")
	euOnly := mk("tn_euonly001", schemas.TierStandard, schemas.StatusActive, "eu-west")
	badOverride := mk("tn_badlimit1", schemas.TierStandard, schemas.StatusActive, "eu-west")
	badOverride.RateLimit = &schemas.RateLimit{RequestsPerMinute: -5, BurstSize: 0}
	badJWT := mk("tn_badjwt001", schemas.TierEnterprise, schemas.StatusActive, "eu-west")
	badJWT.JWT = &schemas.JWTConfig{Issuer: "https://idp.bad.example", JWKS: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`}
	badID := mk("TN BAD ID", schemas.TierStandard, schemas.StatusActive, "eu-west")
	return []*schemas.Tenant{sandbox, standard, enterprise, suspended, pending, euOnly, badOverride, badJWT, badID}
}

func build(t *testing.T, cfg *config.Config, region string, tenants []*schemas.Tenant) (xds.Resources, []xds.Skipped, *cachev3.Snapshot) {
	t.Helper()
	b, err := xds.NewBuilder(xds.NewConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	res, skipped, err := b.Build(region, tenants)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	return res, skipped, snap
}

// TestGoldenAndValid builds both regions from fixed tenants, validates every
// resource and packed config, and compares the YAML with testdata.
func TestGoldenAndValid(t *testing.T) {
	cfg := goldenConfig(t)
	for _, region := range cfg.RegionNames() {
		t.Run(region, func(t *testing.T) {
			res, _, snap := build(t, cfg, region, goldenTenants())
			n, err := xds.Validate(snap)
			if err != nil {
				t.Fatal(err)
			}
			// 2 listeners × (HCM + TLS + ext_authz + local_ratelimit + router +
			// access log) + jwt_authn + per-route ext_authz + http2 options.
			if n < 15 {
				t.Fatalf("only %d packed configs validated; the walker misses some", n)
			}
			got, err := xds.FromResources(region, res).YAML()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", region+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenAndValid -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("resources of %s differ from %s (rerun with -update and review the diff):\n%s", region, path, firstDiff(string(want), string(got)))
			}
		})
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return "line " + strconv.Itoa(i+1) + ":\n- " + al[i] + "\n+ " + bl[i]
		}
	}
	return "lengths differ"
}

// regionView is what a test reads back from a region's resources.
type regionView struct {
	buckets   map[string]*rlcommon.LocalRateLimitDescriptor // tenant id -> descriptor
	routes    map[string][]*route.Route                     // tenant id -> routes
	providers map[string]*jwtauthn.JwtProvider
	filters   map[string][]string // listener -> http filter names in order
	listeners map[string]*listener.Listener
	tls       map[string]*tlsv3.DownstreamTlsContext
	rl        *lrl.LocalRateLimit
}

func view(t *testing.T, listeners, routes []any) regionView {
	t.Helper()
	v := regionView{buckets: map[string]*rlcommon.LocalRateLimitDescriptor{}, routes: map[string][]*route.Route{},
		providers: map[string]*jwtauthn.JwtProvider{}, filters: map[string][]string{}, listeners: map[string]*listener.Listener{},
		tls: map[string]*tlsv3.DownstreamTlsContext{}}
	for _, r := range listeners {
		l := r.(*listener.Listener)
		v.listeners[l.GetName()] = l
		fc := l.GetFilterChains()[0]
		m, err := xds.Unpack[*hcm.HttpConnectionManager](fc.GetFilters()[0].GetTypedConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, err := xds.Unpack[*tlsv3.DownstreamTlsContext](fc.GetTransportSocket().GetTypedConfig())
		if err != nil {
			t.Fatal(err)
		}
		v.tls[l.GetName()] = ctx
		for _, f := range m.GetHttpFilters() {
			v.filters[l.GetName()] = append(v.filters[l.GetName()], f.GetName())
			switch f.GetName() {
			case "envoy.filters.http.local_ratelimit":
				rl, err := xds.Unpack[*lrl.LocalRateLimit](f.GetTypedConfig())
				if err != nil {
					t.Fatal(err)
				}
				v.rl = rl
				for _, d := range rl.GetDescriptors() {
					v.buckets[d.GetEntries()[0].GetValue()] = d
				}
			case "envoy.filters.http.jwt_authn":
				ja, err := xds.Unpack[*jwtauthn.JwtAuthentication](f.GetTypedConfig())
				if err != nil {
					t.Fatal(err)
				}
				for n, p := range ja.GetProviders() {
					v.providers[n] = p
				}
			}
		}
	}
	for _, r := range routes {
		for _, vh := range r.(*route.RouteConfiguration).GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				for _, h := range rt.GetMatch().GetHeaders() {
					if h.GetName() == schemas.HeaderTenantID {
						id := h.GetStringMatch().GetExact()
						v.routes[id] = append(v.routes[id], rt)
					}
				}
			}
		}
	}
	return v
}

func anyList[T any](in []T) []any {
	out := make([]any, len(in))
	for i, x := range in {
		out[i] = x
	}
	return out
}

func viewOf(t *testing.T, res xds.Resources) regionView {
	return view(t, anyList(res[resource.ListenerType]), anyList(res[resource.RouteType]))
}

// TestTenantSemantics checks what the golden files encode, so a wrong
// golden cannot be blessed by -update unnoticed.
func TestTenantSemantics(t *testing.T) {
	cfg := goldenConfig(t)
	res, skipped, _ := build(t, cfg, "us-east", goldenTenants())
	v := viewOf(t, res)

	for _, l := range []string{xds.ListenerPublic, xds.ListenerEnterprise} {
		f := v.filters[l]
		want := []string{"envoy.filters.http.ext_authz", "envoy.filters.http.local_ratelimit", "envoy.filters.http.router"}
		if l == xds.ListenerEnterprise {
			want = append([]string{"envoy.filters.http.jwt_authn"}, want...)
		}
		if strings.Join(f, ",") != strings.Join(want, ",") {
			t.Errorf("%s filters = %v, want %v", l, f, want)
		}
	}
	if !v.tls[xds.ListenerEnterprise].GetRequireClientCertificate().GetValue() {
		t.Error("enterprise listener does not require client certificates")
	}
	if v.tls[xds.ListenerPublic].GetRequireClientCertificate().GetValue() {
		t.Error("public listener requires client certificates")
	}
	if v.rl.GetAlwaysConsumeDefaultTokenBucket().GetValue() || v.rl.GetEnableXRatelimitHeaders() != rlcommon.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03 {
		t.Error("local_ratelimit must not consume the default bucket and must send rate-limit headers")
	}

	// Sandbox tier default 20 rpm burst 5 → 1 token every 3s; standard
	// override 90 rpm burst 15 → 3 tokens every 2s; enterprise 300/50 → 5/s.
	checkBucket := func(id string, max, tokens uint32, every time.Duration) {
		t.Helper()
		d, ok := v.buckets[id]
		if !ok {
			t.Fatalf("no bucket for %s", id)
		}
		tb := d.GetTokenBucket()
		if tb.GetMaxTokens() != max || tb.GetTokensPerFill().GetValue() != tokens || tb.GetFillInterval().AsDuration() != every {
			t.Errorf("%s bucket = %d max, %d per %v; want %d, %d per %v", id, tb.GetMaxTokens(), tb.GetTokensPerFill().GetValue(), tb.GetFillInterval().AsDuration(), max, tokens, every)
		}
	}
	checkBucket("tn_sandbox01", 5, 1, 3*time.Second)
	checkBucket("tn_standard1", 15, 3, 2*time.Second)
	checkBucket("tn_enterpri1", 50, 5, time.Second)
	for _, id := range []string{"tn_suspend01", "tn_pending01", "tn_euonly001"} {
		if _, ok := v.buckets[id]; ok {
			t.Errorf("%s has a bucket in us-east", id)
		}
		if _, ok := v.routes[id]; ok {
			t.Errorf("%s has routes in us-east", id)
		}
	}

	clusterOf := func(r *route.Route) string { return r.GetRoute().GetCluster() }
	prefixes := func(id string) (out []string) {
		for _, r := range v.routes[id] {
			out = append(out, r.GetMatch().GetPrefix())
		}
		return out
	}
	for _, r := range v.routes["tn_sandbox01"] {
		if clusterOf(r) != xds.ClusterSandbox {
			t.Errorf("sandbox tenant route %s goes to %s", r.GetName(), clusterOf(r))
		}
		if a := r.GetRoute().GetRateLimits()[0].GetActions()[0].GetRequestHeaders(); a.GetHeaderName() != schemas.HeaderRateLimitKey || a.GetDescriptorKey() != xds.DescriptorKey {
			t.Errorf("route %s rate limit action = %v", r.GetName(), a)
		}
	}
	if got := strings.Join(prefixes("tn_sandbox01"), ","); got != "/api/v1/partners/reports,/api/v1/partners/" {
		t.Errorf("sandbox routes = %s (bulk_export is off, reports on)", got)
	}
	if got := strings.Join(prefixes("tn_standard1"), ","); got != "/api/v1/partners/" {
		t.Errorf("standard routes = %s (no features)", got)
	}
	for _, r := range v.routes["tn_enterpri1"] {
		if clusterOf(r) != xds.ClusterProduction {
			t.Errorf("enterprise route %s goes to %s", r.GetName(), clusterOf(r))
		}
	}
	if p, ok := v.providers["tenant-tn_enterpri1"]; !ok || p.GetIssuer() != "https://idp.example.com" || p.GetFromHeaders()[0].GetName() != "x-partner-jwt" {
		t.Errorf("enterprise jwt provider = %v", p)
	}
	if len(skipped) != 0 {
		t.Errorf("us-east skipped %v", skipped)
	}

	// eu-west: the invalid override falls back to the tier default, the
	// invalid JWKS and the invalid id exclude their tenants.
	res, skipped, _ = build(t, cfg, "eu-west", goldenTenants())
	v = viewOf(t, res)
	checkBucket("tn_badlimit1", 10, 1, time.Second)
	if _, ok := v.buckets["tn_badjwt001"]; ok {
		t.Error("tenant with an unusable JWKS is served")
	}
	got := map[string]bool{}
	for _, s := range skipped {
		got[s.TenantID] = s.Excluded
	}
	if ex, ok := got["tn_badlimit1"]; !ok || ex {
		t.Errorf("bad override: skipped=%v", skipped)
	}
	if ex := got["tn_badjwt001"]; !ex {
		t.Errorf("bad JWKS not excluded: %v", skipped)
	}
	if ex := got["TN BAD ID"]; !ex {
		t.Errorf("bad id not excluded: %v", skipped)
	}
}

func TestTokenBucket(t *testing.T) {
	cases := []struct {
		rpm, burst int
		tokens     uint32
		every      time.Duration
	}{
		{60, 10, 1, time.Second},
		{20, 5, 1, 3 * time.Second},
		{300, 50, 5, time.Second},
		{90, 15, 3, 2 * time.Second},
		{7, 10, 7, 60 * time.Second},
		{7, 1, 1, 9 * time.Second}, // no exact split within the burst: rounded
		{1, 1, 1, 60 * time.Second},
		{1_000_000, 1_000_000, 50000, 3 * time.Second},
	}
	for _, c := range cases {
		tb := xds.TokenBucket(schemas.RateLimit{RequestsPerMinute: c.rpm, BurstSize: c.burst})
		if tb.GetTokensPerFill().GetValue() != c.tokens || tb.GetFillInterval().AsDuration() != c.every || tb.GetMaxTokens() != uint32(c.burst) {
			t.Errorf("rpm %d burst %d: got %d per %v (max %d), want %d per %v", c.rpm, c.burst,
				tb.GetTokensPerFill().GetValue(), tb.GetFillInterval().AsDuration(), tb.GetMaxTokens(), c.tokens, c.every)
		}
		if err := tb.ValidateAll(); err != nil {
			t.Errorf("rpm %d: %v", c.rpm, err)
		}
	}
}

func TestValidateCatchesPackedConfig(t *testing.T) {
	cfg := goldenConfig(t)
	res, _, _ := build(t, cfg, "us-east", goldenTenants())
	// Break the local_ratelimit config inside the HCM inside the listener:
	// only an unpacking validator sees it.
	l := res[resource.ListenerType][1].(*listener.Listener)
	m, _ := xds.Unpack[*hcm.HttpConnectionManager](l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
	for _, f := range m.GetHttpFilters() {
		if f.GetName() == "envoy.filters.http.local_ratelimit" {
			rl, _ := xds.Unpack[*lrl.LocalRateLimit](f.GetTypedConfig())
			rl.StatPrefix = "" // required: min_len 1
			if err := f.GetTypedConfig().MarshalFrom(rl); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().MarshalFrom(m); err != nil {
		t.Fatal(err)
	}
	if err := l.ValidateAll(); err != nil {
		t.Fatalf("outer ValidateAll already fails (%v): the test would not show the walker matters", err)
	}
	_, err := xds.ValidateResource(l)
	if err == nil || !strings.Contains(err.Error(), "StatPrefix") {
		t.Fatalf("want a StatPrefix violation from the packed local_ratelimit, got %v", err)
	}
}

// TestTracing: with a collector configured every HCM traces to it through
// an HTTP/2 cluster, and the packed tracer config validates.
func TestTracing(t *testing.T) {
	cfg := goldenConfig(t)
	cfg.XDS.Tracing = config.EdgeTracing{CollectorAddress: "otel-collector:4317", SamplePercent: 10}
	res, _, snap := build(t, cfg, "us-east", goldenTenants())
	if _, err := xds.Validate(snap); err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.GetResources(resource.ClusterType)[xds.ClusterOTel]; !ok {
		t.Fatal("no collector cluster")
	}
	for _, r := range res[resource.ListenerType] {
		l := r.(*listener.Listener)
		m, _ := xds.Unpack[*hcm.HttpConnectionManager](l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
		tr := m.GetTracing()
		if tr.GetProvider().GetName() != "envoy.tracers.opentelemetry" || tr.GetRandomSampling().GetValue() != 10 {
			t.Fatalf("%s tracing = %v", l.GetName(), tr)
		}
	}
	// Without a collector nothing traces and no cluster points nowhere.
	_, _, snap = build(t, goldenConfig(t), "us-east", goldenTenants())
	if _, ok := snap.GetResources(resource.ClusterType)[xds.ClusterOTel]; ok {
		t.Fatal("collector cluster without a collector")
	}
}
