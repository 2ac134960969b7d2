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

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	lrl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rlsconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/partners-engine/partners-engine/control-plane/ratelimit"
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
	// The seed's standard tier is in the shipped YAML, not the defaults.
	cfg.Partner.RateLimit.Tiers["standard"] = config.RateLimit{RequestsPerMinute: 60, BurstSize: 10}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

func build(t *testing.T, cfg *config.Config, region string) (xds.Resources, *cachev3.Snapshot) {
	t.Helper()
	res, err := xds.NewBuilder(xds.NewConfig(cfg)).Build(region)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	return res, snap
}

// TestGoldenAndValid builds both regions, validates every resource and
// packed config, and compares the YAML with testdata.
func TestGoldenAndValid(t *testing.T) {
	cfg := goldenConfig(t)
	for _, region := range cfg.RegionNames() {
		t.Run(region, func(t *testing.T) {
			res, snap := build(t, cfg, region)
			n, err := xds.Validate(snap)
			if err != nil {
				t.Fatal(err)
			}
			// 2 listeners × (HCM + TLS + ext_authz + shield + 2 global
			// rate limits + router + access log) + per-route ext_authz +
			// 2 HTTP/2 options (ext_authz and rate-limit clusters).
			if n != 19 {
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
	listeners map[string]*listener.Listener
	hcm       map[string]*hcm.HttpConnectionManager
	filters   map[string][]string // listener -> http filter names in order
	tls       map[string]*tlsv3.DownstreamTlsContext
	shield    *lrl.LocalRateLimit
	global    map[string]*grl.RateLimit // filter name -> config
	authz     *extauthz.ExtAuthz
	routes    map[string]*route.Route // route name -> route
	vhost     *route.VirtualHost
	clusters  map[string]*cluster.Cluster
	rls       *rlsconf.RateLimitConfig
}

func viewOf(t *testing.T, res map[string][]any) regionView {
	t.Helper()
	v := regionView{listeners: map[string]*listener.Listener{}, hcm: map[string]*hcm.HttpConnectionManager{}, filters: map[string][]string{},
		tls: map[string]*tlsv3.DownstreamTlsContext{}, global: map[string]*grl.RateLimit{}, routes: map[string]*route.Route{},
		clusters: map[string]*cluster.Cluster{}}
	for _, r := range res[resource.ListenerType] {
		l := r.(*listener.Listener)
		v.listeners[l.GetName()] = l
		fc := l.GetFilterChains()[0]
		m, err := xds.Unpack[*hcm.HttpConnectionManager](fc.GetFilters()[0].GetTypedConfig())
		if err != nil {
			t.Fatal(err)
		}
		v.hcm[l.GetName()] = m
		ctx, err := xds.Unpack[*tlsv3.DownstreamTlsContext](fc.GetTransportSocket().GetTypedConfig())
		if err != nil {
			t.Fatal(err)
		}
		v.tls[l.GetName()] = ctx
		for _, f := range m.GetHttpFilters() {
			v.filters[l.GetName()] = append(v.filters[l.GetName()], f.GetName())
			switch f.GetTypedConfig().GetTypeUrl() {
			case "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit":
				if v.shield, err = xds.Unpack[*lrl.LocalRateLimit](f.GetTypedConfig()); err != nil {
					t.Fatal(err)
				}
			case "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit":
				g, err := xds.Unpack[*grl.RateLimit](f.GetTypedConfig())
				if err != nil {
					t.Fatal(err)
				}
				v.global[f.GetName()] = g
			case "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz":
				if v.authz, err = xds.Unpack[*extauthz.ExtAuthz](f.GetTypedConfig()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, r := range res[resource.RouteType] {
		for _, vh := range r.(*route.RouteConfiguration).GetVirtualHosts() {
			v.vhost = vh
			for _, rt := range vh.GetRoutes() {
				v.routes[rt.GetName()] = rt
			}
		}
	}
	for _, r := range res[resource.ClusterType] {
		c := r.(*cluster.Cluster)
		v.clusters[c.GetName()] = c
	}
	for _, r := range res[resource.RateLimitConfigType] {
		v.rls = r.(*rlsconf.RateLimitConfig)
	}
	return v
}

func anyMap(res xds.Resources) map[string][]any {
	out := map[string][]any{}
	for typ, rs := range res {
		for _, r := range rs {
			out[typ] = append(out[typ], r)
		}
	}
	return out
}

// TestListenersAndRoutes checks what the golden files encode, so a wrong
// golden cannot be blessed by -update unnoticed.
func TestListenersAndRoutes(t *testing.T) {
	cfg := goldenConfig(t)
	res, _ := build(t, cfg, "us-east")
	v := viewOf(t, anyMap(res))

	for _, l := range []string{xds.ListenerPublic, xds.ListenerEnterprise} {
		want := []string{xds.FilterExtAuthz, xds.FilterShield, xds.FilterGlobalFailOpen, xds.FilterGlobalFailClose, xds.FilterRouter}
		if got := v.filters[l]; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s filters = %v, want %v", l, got, want)
		}
		m := v.hcm[l]
		if !m.GetNormalizePath().GetValue() || !m.GetMergeSlashes() || m.GetPathWithEscapedSlashesAction() != hcm.HttpConnectionManager_REJECT_REQUEST {
			t.Errorf("%s does not normalise paths: normalize_path=%v merge_slashes=%v escaped_slashes=%v", l,
				m.GetNormalizePath(), m.GetMergeSlashes(), m.GetPathWithEscapedSlashesAction())
		}
	}
	if !v.tls[xds.ListenerEnterprise].GetRequireClientCertificate().GetValue() {
		t.Error("enterprise listener does not require client certificates")
	}
	if v.tls[xds.ListenerPublic].GetRequireClientCertificate().GetValue() {
		t.Error("public listener requires client certificates")
	}
	if a := v.authz; a.GetFailureModeAllow() || !a.GetIncludePeerCertificate() || !a.GetClearRouteCache() {
		t.Errorf("ext_authz must fail closed, forward the peer certificate and re-route: %v", a)
	}

	// The global filters: one stage fails open, the other closed.
	open, closed := v.global[xds.FilterGlobalFailOpen], v.global[xds.FilterGlobalFailClose]
	if open.GetStage() != ratelimit.StageFailOpen || open.GetFailureModeDeny() || closed.GetStage() != ratelimit.StageFailClosed || !closed.GetFailureModeDeny() {
		t.Fatalf("global rate-limit stages: open %d deny=%v, closed %d deny=%v", open.GetStage(), open.GetFailureModeDeny(), closed.GetStage(), closed.GetFailureModeDeny())
	}
	for _, g := range v.global {
		if g.GetDomain() != "partners" || g.GetRateLimitService().GetGrpcService().GetEnvoyGrpc().GetClusterName() != xds.ClusterRateLimit ||
			g.GetTimeout().AsDuration() != 100*time.Millisecond {
			t.Errorf("global rate limit %v", g)
		}
	}
	if _, ok := v.clusters[xds.ClusterRateLimit]; !ok {
		t.Fatal("no rate-limit service cluster")
	}

	// Tier routes: upstream, failure stage, descriptors and override path.
	wantStage := map[string]uint32{schemas.TierSandbox: ratelimit.StageFailClosed, schemas.TierStandard: ratelimit.StageFailOpen, schemas.TierEnterprise: ratelimit.StageFailOpen}
	for _, tier := range schemas.Tiers {
		r := v.routes[xds.TierRouteName(tier)]
		if r == nil {
			t.Fatalf("no route for tier %s", tier)
		}
		wantCluster := xds.ClusterProduction
		if tier == schemas.TierSandbox {
			wantCluster = xds.ClusterSandbox
		}
		if r.GetRoute().GetCluster() != wantCluster || r.GetMatch().GetHeaders()[0].GetName() != schemas.HeaderTier ||
			r.GetMatch().GetHeaders()[0].GetStringMatch().GetExact() != tier || r.GetMatch().GetPrefix() != cfg.Partner.Gateway.APIPrefix {
			t.Errorf("route %s = %v", r.GetName(), r)
		}
		rls := r.GetRoute().GetRateLimits()
		if len(rls) != 2 {
			t.Fatalf("route %s has %d rate limits, want minute and second", r.GetName(), len(rls))
		}
		for i, w := range []string{schemas.MetadataWindowMinute, schemas.MetadataWindowSecond} {
			rl := rls[i]
			a := rl.GetActions()
			if rl.GetStage().GetValue() != wantStage[tier] || len(a) != 3 ||
				a[0].GetGenericKey().GetDescriptorKey() != schemas.DescriptorTier || a[0].GetGenericKey().GetDescriptorValue() != tier ||
				a[1].GetRequestHeaders().GetHeaderName() != schemas.HeaderRateLimitKey || a[1].GetRequestHeaders().GetDescriptorKey() != schemas.DescriptorTenant ||
				a[2].GetGenericKey().GetDescriptorKey() != schemas.DescriptorWindow || a[2].GetGenericKey().GetDescriptorValue() != w {
				t.Errorf("route %s rate limit %d = %v", r.GetName(), i, rl)
			}
			mk := rl.GetLimit().GetDynamicMetadata().GetMetadataKey()
			if mk.GetKey() != schemas.MetadataNamespace || len(mk.GetPath()) != 2 || mk.GetPath()[0].GetKey() != schemas.MetadataRateLimit || mk.GetPath()[1].GetKey() != w {
				t.Errorf("route %s rate limit %d override = %v", r.GetName(), i, mk)
			}
		}
	}
	if ext := v.vhost.GetTypedPerFilterConfig()[xds.FilterExtAuthz]; ext == nil {
		t.Fatal("no region context extension")
	} else if pr, err := xds.Unpack[*extauthz.ExtAuthzPerRoute](ext); err != nil || pr.GetCheckSettings().GetContextExtensions()[schemas.ContextRegion] != "us-east" {
		t.Fatalf("per-route ext_authz = %v %v", pr, err)
	}

	// The rate-limit service's descriptors: the seed's tiers, burst as the
	// second window.
	want := map[string][2]uint32{"sandbox": {20, 5}, "standard": {60, 10}, "enterprise": {300, 50}}
	for _, d := range v.rls.GetDescriptors() {
		w := want[d.GetValue()]
		tenant := d.GetDescriptors()[0]
		if d.GetKey() != schemas.DescriptorTier || tenant.GetKey() != schemas.DescriptorTenant || tenant.GetValue() != "" {
			t.Fatalf("descriptor tree %v", d)
		}
		got := [2]uint32{}
		for _, wd := range tenant.GetDescriptors() {
			switch wd.GetValue() {
			case schemas.MetadataWindowMinute:
				if wd.GetRateLimit().GetUnit() != rlsconf.RateLimitUnit_MINUTE {
					t.Errorf("%s minute window unit %v", d.GetValue(), wd.GetRateLimit().GetUnit())
				}
				got[0] = wd.GetRateLimit().GetRequestsPerUnit()
			case schemas.MetadataWindowSecond:
				if wd.GetRateLimit().GetUnit() != rlsconf.RateLimitUnit_SECOND {
					t.Errorf("%s second window unit %v", d.GetValue(), wd.GetRateLimit().GetUnit())
				}
				got[1] = wd.GetRateLimit().GetRequestsPerUnit()
			}
		}
		if got != w {
			t.Errorf("tier %s limits %v, want %v", d.GetValue(), got, w)
		}
		delete(want, d.GetValue())
	}
	if len(want) != 0 {
		t.Errorf("tiers without descriptors: %v", want)
	}

	// The shield: one wildcard descriptor per class, sized by the class.
	if len(v.shield.GetDescriptors()) != schemas.ShieldClassMax-schemas.ShieldClassMin+1 || v.shield.GetMaxDynamicDescriptors().GetValue() != 20_000 {
		t.Fatalf("shield has %d descriptors, max dynamic %d", len(v.shield.GetDescriptors()), v.shield.GetMaxDynamicDescriptors().GetValue())
	}
	for i, d := range v.shield.GetDescriptors() {
		k := schemas.ShieldClassMin + i
		e := d.GetEntries()
		if len(e) != 2 || e[0].GetValue() != schemas.ShieldClassName(k) || e[1].GetKey() != schemas.DescriptorTenant || e[1].GetValue() != "" ||
			d.GetTokenBucket().GetMaxTokens() != uint32(schemas.ShieldTokens(k)) || d.GetTokenBucket().GetFillInterval().AsDuration() != schemas.ShieldFillSeconds*time.Second {
			t.Errorf("shield descriptor %d = %v", k, d)
		}
	}
}

// TestFailClosedTiersConfigurable: moving a tier to fail closed moves its
// descriptors to the fail-closed filter's stage.
func TestFailClosedTiersConfigurable(t *testing.T) {
	cfg := goldenConfig(t)
	cfg.Partner.RateLimit.Service.FailClosedTiers = []string{schemas.TierEnterprise}
	res, _ := build(t, cfg, "us-east")
	v := viewOf(t, anyMap(res))
	for tier, want := range map[string]uint32{schemas.TierSandbox: ratelimit.StageFailOpen, schemas.TierEnterprise: ratelimit.StageFailClosed} {
		for _, rl := range v.routes[xds.TierRouteName(tier)].GetRoute().GetRateLimits() {
			if rl.GetStage().GetValue() != want {
				t.Errorf("tier %s stage %d, want %d", tier, rl.GetStage().GetValue(), want)
			}
		}
	}
}

func TestValidateCatchesPackedConfig(t *testing.T) {
	cfg := goldenConfig(t)
	res, _ := build(t, cfg, "us-east")
	// Break the shield config inside the HCM inside the listener: only an
	// unpacking validator sees it.
	l := res[resource.ListenerType][1].(*listener.Listener)
	m, _ := xds.Unpack[*hcm.HttpConnectionManager](l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
	for _, f := range m.GetHttpFilters() {
		if f.GetName() == xds.FilterShield {
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
	// The rate-limit service's configuration is checked as the service loads it.
	rc := res[resource.RateLimitConfigType][0].(*rlsconf.RateLimitConfig)
	rc.Descriptors[0].Descriptors[0].Descriptors[0].RateLimit.RequestsPerUnit = 0
	if _, err := xds.ValidateResource(rc); err == nil || !strings.Contains(err.Error(), "requests_per_unit") {
		t.Fatalf("want a requests_per_unit violation, got %v", err)
	}
}

// TestTracing: with a collector configured every HCM traces to it through
// an HTTP/2 cluster, and the packed tracer config validates.
func TestTracing(t *testing.T) {
	cfg := goldenConfig(t)
	cfg.XDS.Tracing = config.EdgeTracing{CollectorAddress: "otel-collector:4317", SamplePercent: 10}
	res, snap := build(t, cfg, "us-east")
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
	_, snap = build(t, goldenConfig(t), "us-east")
	if _, ok := snap.GetResources(resource.ClusterType)[xds.ClusterOTel]; ok {
		t.Fatal("collector cluster without a collector")
	}
}

// TestGRPCTLS: with xds.grpc_tls Envoy reaches ext_authz and the rate-limit
// service over mutual TLS with certificates from files on its host (SDS).
func TestGRPCTLS(t *testing.T) {
	cfg := goldenConfig(t)
	cfg.XDS.GRPCTLS.Enabled = true
	res, snap := build(t, cfg, "us-east")
	if _, err := xds.Validate(snap); err != nil {
		t.Fatal(err)
	}
	v := viewOf(t, anyMap(res))
	for _, name := range []string{xds.ClusterExtAuthz, xds.ClusterRateLimit} {
		ts := v.clusters[name].GetTransportSocket()
		up, err := xds.Unpack[*tlsv3.UpstreamTlsContext](ts.GetTypedConfig())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cc := up.GetCommonTlsContext()
		if cc.GetTlsCertificateSdsSecretConfigs()[0].GetName() != xds.SecretGRPCClientCert || cc.GetValidationContextSdsSecretConfig().GetName() != xds.SecretGRPCCA || up.GetSni() != "127.0.0.1" {
			t.Errorf("%s upstream TLS = %v", name, up)
		}
	}
	for _, s := range []string{xds.SecretGRPCCA, xds.SecretGRPCClientCert} {
		sec, ok := snap.GetResources(resource.SecretType)[s].(*tlsv3.Secret)
		if !ok {
			t.Fatalf("no secret %s", s)
		}
		if !strings.Contains(sec.String(), "/etc/envoy/grpc/") {
			t.Errorf("secret %s does not point at the Envoy host's files: %v", s, sec)
		}
	}
	if v.clusters[xds.ClusterProduction].GetTransportSocket() != nil {
		t.Error("the partner API upstream got the gRPC TLS")
	}
	// Off by default.
	res, _ = build(t, goldenConfig(t), "us-east")
	if viewOf(t, anyMap(res)).clusters[xds.ClusterExtAuthz].GetTransportSocket() != nil {
		t.Error("ext_authz TLS without xds.grpc_tls.enabled")
	}
}

// TestDeterministicPacking: two builds of one configuration are byte for
// byte the same (the delta server hashes resources; a random map order
// inside a packed config would make an unchanged listener look changed).
func TestDeterministicPacking(t *testing.T) {
	cfg := goldenConfig(t)
	first := xdsBytes(t, cfg)
	for i := 0; i < 20; i++ {
		if got := xdsBytes(t, cfg); !bytes.Equal(got, first) {
			t.Fatal("a rebuild of the same configuration differs")
		}
	}
}

func xdsBytes(t *testing.T, cfg *config.Config) []byte {
	t.Helper()
	res, err := xds.NewBuilder(xds.NewConfig(cfg)).Build("us-east")
	if err != nil {
		t.Fatal(err)
	}
	return marshalAll(t, anyMap(res))
}

// contextRegion is the region the route table tells the plugin.
func contextRegion(t *testing.T, rc *route.RouteConfiguration) string {
	t.Helper()
	pr, err := xds.Unpack[*extauthz.ExtAuthzPerRoute](rc.GetVirtualHosts()[0].GetTypedPerFilterConfig()[xds.FilterExtAuthz])
	if err != nil {
		t.Fatal(err)
	}
	return pr.GetCheckSettings().GetContextExtensions()[schemas.ContextRegion]
}
