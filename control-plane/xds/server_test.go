package xds_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	client "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/control-plane/xds/xdstest"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores()...)
}

type running struct {
	srv  *xds.Server
	conn *grpc.ClientConn
	prom *prometheus.Registry
	logs *testenv.LogBuffer
}

func startServer(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	logs := &testenv.LogBuffer{}
	prom := prometheus.NewRegistry()
	srv, err := xds.New(xds.Options{Config: xds.NewConfig(cfg), Log: logs.Logger(t), Registerer: prom})
	if err != nil {
		t.Fatal(err)
	}
	conn := testenv.ServeGRPC(t, srv.Serve)
	return &running{srv: srv, conn: conn, prom: prom, logs: logs}
}

// adsClient is go-control-plane's SotW ADS client for one type, as one
// Envoy node of a region.
type adsClient struct {
	t *testing.T
	c client.ADSClient
}

func newADS(t *testing.T, conn *grpc.ClientConn, region, typ string) *adsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := client.NewADSClient(ctx, &core.Node{Id: "envoy-" + region + "-" + testenv.RandomID(), Cluster: region}, typ)
	if err := c.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	return &adsClient{t: t, c: c}
}

// fetchAsync waits for the next response in the background. While it
// waits the client cannot ACK (the client holds its lock in Fetch).
func (a *adsClient) fetchAsync() <-chan *client.Response {
	ch := make(chan *client.Response, 1)
	go func() {
		r, err := a.c.Fetch()
		if err != nil {
			close(ch)
			return
		}
		ch <- r
	}()
	return ch
}

func (a *adsClient) fetch() *client.Response {
	a.t.Helper()
	select {
	case r, ok := <-a.fetchAsync():
		if !ok {
			a.t.Fatal("stream ended")
		}
		return r
	case <-time.After(20 * time.Second):
		a.t.Fatal("no xDS response within 20s")
	}
	return nil
}

func unpackAll(t *testing.T, as []*anypb.Any) []any {
	t.Helper()
	out := make([]any, 0, len(as))
	for _, a := range as {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// deltaStream is a raw delta ADS stream (what deploy/envoy's bootstrap
// uses) subscribed with wildcards.
type deltaStream struct {
	t  *testing.T
	st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	ch chan *discovery.DeltaDiscoveryResponse
}

func newDelta(t *testing.T, conn *grpc.ClientConn, node *core.Node, types ...string) *deltaStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range types {
		if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
	}
	d := &deltaStream{t: t, st: st, ch: make(chan *discovery.DeltaDiscoveryResponse, 16)}
	go func() {
		defer close(d.ch)
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			d.ch <- r
		}
	}()
	return d
}

func (d *deltaStream) recv() *discovery.DeltaDiscoveryResponse {
	d.t.Helper()
	select {
	case r, ok := <-d.ch:
		if !ok {
			d.t.Fatal("delta stream ended")
		}
		return r
	case <-time.After(20 * time.Second):
		d.t.Fatal("no delta response within 20s")
	}
	return nil
}

// recvType receives until a response of typ, ACKing every response.
func (d *deltaStream) recvType(typ string) *discovery.DeltaDiscoveryResponse {
	d.t.Helper()
	for {
		r := d.recv()
		d.ack(r)
		if r.GetTypeUrl() == typ {
			return r
		}
	}
}

// initial receives and ACKs the first response of every type.
func (d *deltaStream) initial(types ...string) map[string]*discovery.DeltaDiscoveryResponse {
	d.t.Helper()
	out := map[string]*discovery.DeltaDiscoveryResponse{}
	for len(out) < len(types) {
		r := d.recv()
		d.ack(r)
		out[r.GetTypeUrl()] = r
	}
	return out
}

func (d *deltaStream) ack(r *discovery.DeltaDiscoveryResponse) {
	d.t.Helper()
	if err := d.st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
		d.t.Fatal(err)
	}
}

func deltaResources(t *testing.T, r *discovery.DeltaDiscoveryResponse) []any {
	out := make([]any, 0)
	for _, res := range r.GetResources() {
		out = append(out, unpackAll(t, []*anypb.Any{res.GetResource()})...)
	}
	return out
}

// wire is what a node holds of one type: resource name -> the bytes it
// received (go-control-plane marshals deterministically).
type wire map[string][]byte

func sotwWire(t *testing.T, r *client.Response) wire {
	t.Helper()
	w := wire{}
	for _, m := range unpackAll(t, r.Resources) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.(proto.Message))
		if err != nil {
			t.Fatal(err)
		}
		w[m.(interface{ GetName() string }).GetName()] = b
	}
	return w
}

func deltaWire(r *discovery.DeltaDiscoveryResponse) wire {
	w := wire{}
	for _, res := range r.GetResources() {
		w[res.GetName()] = res.GetResource().GetValue()
	}
	return w
}

func (w wire) equal(o wire) bool {
	if len(w) != len(o) {
		return false
	}
	for k, v := range w {
		if !bytes.Equal(v, o[k]) {
			return false
		}
	}
	return true
}

// marshalAll is every resource, deterministically marshalled, in type and
// name order.
func marshalAll(t testing.TB, res map[string][]any) []byte {
	t.Helper()
	var types []string
	for typ := range res {
		types = append(types, typ)
	}
	sort.Strings(types)
	var out []byte
	for _, typ := range types {
		for _, r := range res[typ] {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.(proto.Message))
			if err != nil {
				t.Fatal(err)
			}
			out = append(append(out, typ...), b...)
		}
	}
	return out
}

// TestTenantChangesNeverReachXDS is the stable-listener contract: through
// the admin API on the test brokers (a registry following the tenants
// topic, as `partners control-plane` runs), 100 tenants are created,
// suspended, reactivated, rotated and updated in every way a tenant can
// change, while Envoys of both regions hold ADS streams (go-control-plane's
// SotW client per type, ACKing; a raw delta stream ACKing as Envoy does).
// No stream receives anything, and the listeners (and routes, clusters,
// secrets) a fresh node fetches are byte-identical to the ones before. The
// same streams do see a configuration change (the control that the
// detection works): it reaches the route table and leaves the listeners'
// bytes alone.
func TestTenantChangesNeverReachXDS(t *testing.T) {
	cfg := testenv.Config(t)
	logs := &testenv.LogBuffer{}
	admin := xdstest.Start(t, cfg, logs.Logger(t), xdstest.Options{KeyOverlap: time.Hour})
	r := startServer(t, cfg)

	sotw := map[string]*adsClient{}
	before := map[string]wire{}
	for _, typ := range xds.EnvoyTypes {
		c := newADS(t, r.conn, "us-east", typ)
		resp := c.fetch()
		if err := c.c.Ack(); err != nil {
			t.Fatal(err)
		}
		sotw[typ], before[typ] = c, sotwWire(t, resp)
	}
	if len(before[resource.ListenerType]) != 2 {
		t.Fatalf("us-east got %d listeners", len(before[resource.ListenerType]))
	}
	delta := newDelta(t, r.conn, &core.Node{Id: "envoy-eu-west-1", Cluster: "eu-west"}, xds.EnvoyTypes...)
	deltaBefore := map[string]wire{}
	for typ, resp := range delta.initial(xds.EnvoyTypes...) {
		deltaBefore[typ] = deltaWire(resp)
	}
	versions := map[string]string{"us-east": r.srv.Version("us-east"), "eu-west": r.srv.Version("eu-west")}

	// Every SotW client waits for a next response; the delta stream is read
	// by its goroutine.
	pending := map[string]<-chan *client.Response{}
	for typ, c := range sotw {
		pending[typ] = c.fetchAsync()
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	doc := jwks.Document(&key.PublicKey, "k1")
	var ids []string
	for i := 0; i < 100; i++ {
		tier := schemas.Tiers[i%3]
		req := registry.CreateRequest{Name: fmt.Sprintf("Stable %02d %s", i, testenv.RandomID()), Tier: tier,
			Features: map[string]bool{"reports": i%2 == 0}}
		if i%4 == 0 {
			req.RateLimit = &schemas.RateLimit{RequestsPerMinute: 100 + i, BurstSize: 20}
		}
		if i%5 == 0 {
			req.Regions = []string{"eu-west"}
		}
		if tier == schemas.TierEnterprise {
			req.JWT = &schemas.JWTConfig{Issuer: "https://idp.example/" + fmt.Sprint(i), JWKS: doc}
			req.ClientIdentities = []string{fmt.Sprintf("spiffe://partner-%d.example/client", i)}
		}
		ids = append(ids, admin.Create(req).ID)
	}
	for i, id := range ids {
		switch i % 4 {
		case 0:
			admin.Suspend(id)
			admin.Activate(id)
			admin.Suspend(id)
		case 1:
			admin.RotateKey(id)
		case 2:
			tier, features := schemas.Tiers[(i+1)%3], map[string]bool{"bulk_export": true}
			p := registry.Patch{Tier: &tier, Features: features, RateLimit: &schemas.RateLimit{RequestsPerMinute: 7, BurstSize: 3},
				Regions: []string{"us-east", "eu-west"}}
			if tier != schemas.TierEnterprise {
				none := []string{}
				p.ClientIdentities = &none
			}
			admin.Patch(id, p)
		case 3:
			name := fmt.Sprintf("Renamed %02d %s", i, testenv.RandomID())
			admin.Patch(id, registry.Patch{Name: &name, RateLimit: &schemas.RateLimit{RequestsPerMinute: 900, BurstSize: 90}})
		}
	}
	if n := len(admin.Registry.List()); n < 100 {
		t.Fatalf("registry holds %d tenants after the changes", n)
	}

	// Give a push every chance to arrive: a second after the last change.
	window := time.After(time.Second)
	got := 0
wait:
	for {
		select {
		case <-window:
			break wait
		case d := <-delta.ch:
			t.Errorf("delta stream got %s after tenant changes", d.GetTypeUrl())
			got++
		default:
			for typ, ch := range pending {
				select {
				case <-ch:
					t.Errorf("SotW %s client got a response after tenant changes", typ)
					got++
					pending[typ] = sotw[typ].fetchAsync()
				default:
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got > 0 || r.srv.Version("us-east") != versions["us-east"] || r.srv.Version("eu-west") != versions["eu-west"] {
		t.Fatalf("tenant changes reached xDS: %d responses, versions %v -> us-east %s eu-west %s", got, versions, r.srv.Version("us-east"), r.srv.Version("eu-west"))
	}

	// A node connecting now gets byte-identical resources.
	for _, typ := range xds.EnvoyTypes {
		fresh := newADS(t, r.conn, "us-east", typ)
		if w := sotwWire(t, fresh.fetch()); !w.equal(before[typ]) {
			t.Fatalf("%s resources changed after 100 tenant changes", typ)
		}
		_ = fresh.c.Ack()
	}
	fresh := newDelta(t, r.conn, &core.Node{Id: "envoy-eu-west-2", Cluster: "eu-west"}, xds.EnvoyTypes...)
	for typ, resp := range fresh.initial(xds.EnvoyTypes...) {
		if !deltaWire(resp).equal(deltaBefore[typ]) {
			t.Fatalf("eu-west %s resources changed after 100 tenant changes", typ)
		}
	}
	for _, region := range cfg.RegionNames() {
		snap, err := r.srv.Snapshot(region)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := xds.Validate(snap); err != nil {
			t.Fatal(err)
		}
	}

	// The control: a route-level configuration change does reach both
	// streams, as a new route table only; the listeners' bytes stay.
	next := *cfg
	next.XDS.UpstreamTimeout = cfg.XDS.UpstreamTimeout + time.Second
	if err := r.srv.Reload(xds.NewConfig(&next)); err != nil {
		t.Fatal(err)
	}
	d := delta.recv()
	delta.ack(d)
	if d.GetTypeUrl() != resource.RouteType {
		t.Fatalf("delta stream got %s first after a route change, want the route table only", d.GetTypeUrl())
	}
	select {
	case resp := <-pending[resource.RouteType]:
		if resp == nil || sotwWire(t, resp).equal(before[resource.RouteType]) {
			t.Fatal("SotW route client got no new route table")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("SotW route client got nothing after a route change")
	}
	for typ, ch := range pending {
		if typ == resource.RouteType {
			continue
		}
		select {
		case <-ch:
			t.Errorf("SotW %s client got a response after a route-only change", typ)
		case <-time.After(200 * time.Millisecond):
		}
	}
	select {
	case extra := <-delta.ch:
		t.Fatalf("delta stream got %s after a route-only change", extra.GetTypeUrl())
	case <-time.After(200 * time.Millisecond):
	}
	lis := newADS(t, r.conn, "us-east", resource.ListenerType)
	if !sotwWire(t, lis.fetch()).equal(before[resource.ListenerType]) {
		t.Fatal("listeners changed with a route-only change")
	}
	_ = lis.c.Ack()
	if got := r.metric("partners_xds_nacks_total"); got != 0 {
		t.Fatalf("%v NACKs", got)
	}
}

// TestRegionsServed: each region's Envoys get that region's configuration
// (its upstreams, its region context for the plugin) over SotW and delta;
// the rate-limit service of a region, which names its region in its node
// metadata, gets the rate-limit configuration.
func TestRegionsServed(t *testing.T) {
	cfg := testenv.Config(t)
	cfg.Regions[1].ProductionUpstream = "10.1.0.7:8443"
	r := startServer(t, cfg)

	us := newADS(t, r.conn, "us-east", resource.RouteType)
	routes := unpackAll(t, us.fetch().Resources)
	if region := regionOf(t, routes); region != "us-east" {
		t.Fatalf("us-east route table carries region %q", region)
	}
	_ = us.c.Ack()
	eu := newDelta(t, r.conn, &core.Node{Id: "envoy-eu-west-1", Cluster: "eu-west"}, xds.EnvoyTypes...)
	got := eu.initial(xds.EnvoyTypes...)
	if region := regionOf(t, deltaResources(t, got[resource.RouteType])); region != "eu-west" {
		t.Fatalf("eu-west route table carries region %q", region)
	}
	clusters := viewOf(t, map[string][]any{resource.ClusterType: deltaResources(t, got[resource.ClusterType])}).clusters
	addr := clusters[xds.ClusterProduction].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if addr.GetAddress() != "10.1.0.7" || addr.GetPortValue() != 8443 {
		t.Fatalf("eu-west production upstream %v", addr)
	}

	meta, _ := structpb.NewStruct(map[string]any{"region": "eu-west"})
	rls := newDelta(t, r.conn, &core.Node{Id: "ratelimit-eu-west", Metadata: meta}, resource.RateLimitConfigType)
	cfgs := deltaResources(t, rls.recvType(resource.RateLimitConfigType))
	if len(cfgs) != 1 || viewOf(t, map[string][]any{resource.RateLimitConfigType: cfgs}).rls.GetDomain() != "partners" {
		t.Fatalf("rate-limit service got %v", cfgs)
	}
	if n := r.metric("partners_xds_unknown_region_streams_total"); n != 0 {
		t.Fatalf("%v unknown-region streams", n)
	}
}

func regionOf(t *testing.T, routes []any) string {
	t.Helper()
	return contextRegion(t, routes[0].(*route.RouteConfiguration))
}

// metric sums a metric family of the server's registry.
func (r *running) metric(name string) float64 {
	return metricSum(r.prom, name)
}

func metricSum(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestNACKNoResendLoop: after a NACK the server sends nothing until a new
// snapshot exists, on SotW and on delta; the NACK is counted and logged with
// Envoy's message.
func TestNACKNoResendLoop(t *testing.T) {
	cfg := testenv.Config(t)
	r := startServer(t, cfg)

	ads := newADS(t, r.conn, "us-east", resource.ListenerType)
	ads.fetch()
	if err := ads.c.Nack("listener partners-https: fake rejection for the test"); err != nil {
		t.Fatal(err)
	}
	delta := newDelta(t, r.conn, &core.Node{Id: "envoy-delta-us-east", Cluster: "us-east"}, resource.ListenerType)
	first := delta.recv()
	if err := delta.st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: first.GetTypeUrl(), ResponseNonce: first.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "delta: fake rejection"}}); err != nil {
		t.Fatal(err)
	}

	// Count responses in a window: a resend loop would produce many.
	pending := ads.fetchAsync()
	window := time.After(time.Second)
	responses := 0
wait:
	for {
		select {
		case <-pending:
			responses++
			pending = ads.fetchAsync()
		case <-delta.ch:
			responses++
		case <-window:
			break wait
		}
	}
	if responses != 0 {
		t.Fatalf("%d responses after the NACKs, want 0 (the rejected version was resent)", responses)
	}
	testenv.Eventually(t, 5*time.Second, "2 NACKs counted", func() bool {
		return r.metric("partners_xds_nacks_total") == 2
	})
	for _, msg := range []string{"fake rejection for the test", "delta: fake rejection", "kept_version"} {
		if !strings.Contains(r.logs.String(), msg) {
			t.Errorf("logs lack %q", msg)
		}
	}

	// A new snapshot (a listener-level change) is sent to both.
	next := *cfg
	next.XDS.ExtAuthzTimeout = cfg.XDS.ExtAuthzTimeout + 50*time.Millisecond
	if err := r.srv.Reload(xds.NewConfig(&next)); err != nil {
		t.Fatal(err)
	}
	select {
	case res, ok := <-pending:
		if !ok || len(res.Resources) != 2 {
			t.Fatalf("SotW: %v", res)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no SotW response after a new snapshot")
	}
	if got := deltaResources(t, delta.recvType(resource.ListenerType)); len(got) != 2 {
		t.Fatalf("delta: %d listeners in the new version", len(got))
	}
}

func TestUnknownRegionGetsEmptyConfig(t *testing.T) {
	cfg := testenv.Config(t)
	r := startServer(t, cfg)
	for _, node := range []*core.Node{{Id: "mars-1", Cluster: "mars"}, {Id: "nowhere"}} {
		ctx, cancel := context.WithCancel(context.Background())
		c := client.NewADSClient(ctx, node, resource.ListenerType)
		if err := c.InitConnect(r.conn); err != nil {
			t.Fatal(err)
		}
		resp, err := c.Fetch()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Resources) != 0 {
			t.Fatalf("node %v got %d listeners, want none", node, len(resp.Resources))
		}
		if err := c.Ack(); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	// The locality region works when cluster is empty.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := client.NewADSClient(ctx, &core.Node{Id: "by-locality", Locality: &core.Locality{Region: "us-east"}}, resource.ListenerType)
	if err := c.InitConnect(r.conn); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Fetch()
	if err != nil || len(resp.Resources) != 2 {
		t.Fatalf("locality node: %d listeners, err %v", len(resp.Resources), err)
	}
	testenv.Eventually(t, 5*time.Second, "unknown nodes counted", func() bool {
		return r.metric("partners_xds_unknown_region_streams_total") == 2
	})
	if !strings.Contains(r.logs.String(), "names no configured region") {
		t.Fatal("unknown region not logged")
	}
}

// TestInvalidBuildRefused: a configuration that fails validation is
// refused and counted, the regions keep serving their last good snapshot,
// and the next valid one gets the next version.
func TestInvalidBuildRefused(t *testing.T) {
	cfg := testenv.Config(t)
	r := startServer(t, cfg)
	good := r.srv.Version("us-east")

	bad := *cfg
	bad.XDS.ConnectTimeout = 0 // clusters' connect_timeout must be > 0
	if err := r.srv.Reload(xds.NewConfig(&bad)); err == nil || !strings.Contains(err.Error(), "ConnectTimeout") {
		t.Fatalf("invalid reload: %v", err)
	}
	if n := r.metric("partners_xds_snapshots_refused_total"); n != 1 {
		t.Fatalf("%v refused builds counted, want 1", n)
	}
	if got := r.srv.Version("us-east"); got != good {
		t.Fatalf("version moved to %s after a refused build", got)
	}
	if !strings.Contains(r.logs.String(), "snapshot refused") || !strings.Contains(r.logs.String(), "ConnectTimeout") {
		t.Fatalf("refusal not logged with its reason:\n%s", r.logs.String())
	}
	ads := newADS(t, r.conn, "us-east", resource.ClusterType)
	for _, c := range viewOf(t, map[string][]any{resource.ClusterType: unpackAll(t, ads.fetch().Resources)}).clusters {
		if c.GetConnectTimeout().AsDuration() != time.Second {
			t.Fatalf("cluster %s served with connect timeout %v: the refused build leaked", c.GetName(), c.GetConnectTimeout().AsDuration())
		}
	}
	if err := ads.c.Ack(); err != nil {
		t.Fatal(err)
	}

	next := *cfg
	next.XDS.ConnectTimeout = 2 * time.Second
	if err := r.srv.Reload(xds.NewConfig(&next)); err != nil {
		t.Fatal(err)
	}
	if got := xds.VersionSeq(r.srv.Version("us-east")); got != xds.VersionSeq(good)+1 {
		t.Fatalf("version seq %d, want %d", got, xds.VersionSeq(good)+1)
	}
	// Reloading the same configuration again changes nothing.
	if err := r.srv.Reload(xds.NewConfig(&next)); err != nil {
		t.Fatal(err)
	}
	if got := xds.VersionSeq(r.srv.Version("us-east")); got != xds.VersionSeq(good)+1 {
		t.Fatalf("an unchanged reload made version seq %d", got)
	}
	// A region cannot appear by reload.
	more := next
	more.Regions = append(append([]config.Region(nil), next.Regions...), config.Region{Name: "ap-south", ProductionUpstream: "127.0.0.1:1", SandboxUpstream: "127.0.0.1:2"})
	if err := r.srv.Reload(xds.NewConfig(&more)); err == nil {
		t.Fatal("a reload added a region")
	}
}

// TestFetchMatchesSnapshot: the operators' dump (delta fetch) returns what
// the snapshot holds.
func TestFetchMatchesSnapshot(t *testing.T) {
	cfg := testenv.Config(t)
	r := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := xds.Fetch(ctx, r.conn, "eu-west", "dump-test")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := r.srv.Snapshot("eu-west")
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.YAML()
	if err != nil {
		t.Fatal(err)
	}
	want, err := xds.FromSnapshot("eu-west", snap).YAML()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("fetched resources differ from the snapshot:\n%s", firstDiff(string(want), string(got)))
	}
	if !strings.Contains(string(got), r.srv.Version("eu-west")) || !strings.Contains(string(got), "domain: partners") {
		t.Fatalf("dump lacks the version %s or the rate-limit configuration:\n%.400s", r.srv.Version("eu-west"), got)
	}
}

// TestServeStopsWithOpenStreams: xDS streams never end by themselves; Serve
// still returns once its context ends (the graceful stop is bounded).
func TestServeStopsWithOpenStreams(t *testing.T) {
	cfg := testenv.Config(t)
	srv, err := xds.New(xds.Options{Config: xds.NewConfig(cfg), Log: (&testenv.LogBuffer{}).Logger(t)})
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
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := newDelta(t, conn, &core.Node{Id: "held", Cluster: "us-east"}, resource.ListenerType)
	d.recvType(resource.ListenerType)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(xds.StopGrace + 20*time.Second):
		t.Fatal("Serve did not return with a stream open")
	}
}

// TestServerMutualTLS: with xds.server_tls the control plane answers only
// nodes presenting a certificate of its client CA.
func TestServerMutualTLS(t *testing.T) {
	cfg := testenv.Config(t)
	pki := testenv.NewPKI(t, "xds CA")
	srvCert := pki.Server("control-plane")
	cfg.XDS.ServerTLS = config.MutualTLS{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, ClientCAFile: pki.CAFile}
	srv, err := xds.New(xds.Options{Config: xds.NewConfig(cfg), Log: (&testenv.LogBuffer{}).Logger(t)})
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
	fetch := func(tc *tls.Config) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = xds.Fetch(ctx, conn, "us-east", "tls-node")
		return err
	}
	envoy := pki.Client("envoy", []string{"spiffe://partners.example/envoy"}, nil)
	if err := fetch(&tls.Config{RootCAs: pki.Pool(), Certificates: []tls.Certificate{envoy.Pair}}); err != nil {
		t.Fatalf("node with a client certificate: %v", err)
	}
	if err := fetch(&tls.Config{RootCAs: pki.Pool()}); err == nil {
		t.Fatal("a node without a client certificate got configuration")
	}
}
