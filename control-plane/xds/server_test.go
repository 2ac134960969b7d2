package xds_test

import (
	"context"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	client "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/control-plane/xds/xdstest"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.GoleakIgnores()...)
}

type running struct {
	cfg  *xds.Config // what the server reads (tests may change it)
	srv  *xds.Server
	conn *grpc.ClientConn
	prom *prometheus.Registry
	logs *testenv.LogBuffer
}

func startServer(t *testing.T, cfg *config.Config, tenants xds.Tenants) *running {
	t.Helper()
	logs := &testenv.LogBuffer{}
	prom := prometheus.NewRegistry()
	xc := xds.NewConfig(cfg)
	srv, err := xds.New(xds.Options{Config: xc, Tenants: tenants, Log: logs.Logger(t), Registerer: prom})
	if err != nil {
		t.Fatal(err)
	}
	conn := testenv.ServeGRPC(t, srv.Serve)
	return &running{cfg: xc, srv: srv, conn: conn, prom: prom, logs: logs}
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
func (a *adsClient) fetchAsync() <-chan []*anypb.Any {
	ch := make(chan []*anypb.Any, 1)
	go func() {
		r, err := a.c.Fetch()
		if err != nil {
			close(ch)
			return
		}
		ch <- r.Resources
	}()
	return ch
}

func (a *adsClient) fetch() []*anypb.Any {
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

func tenantFixture(id, tier string, regions ...string) *schemas.Tenant {
	return &schemas.Tenant{SchemaVersion: "1", ID: id, Name: id, Tier: tier, Status: schemas.StatusActive, Regions: regions, Version: 1}
}

// deltaStream is a raw delta ADS stream (what deploy/envoy's bootstrap
// uses) subscribed with wildcards to every type.
type deltaStream struct {
	t  *testing.T
	st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	ch chan *discovery.DeltaDiscoveryResponse
}

func newDelta(t *testing.T, conn *grpc.ClientConn, region string, types ...string) *deltaStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "envoy-delta-" + region, Cluster: region}
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

// TestRegionsAndAdminAPI drives tenants through the admin API on the test
// brokers and follows two regions through xDS: a SotW ADS client
// (go-control-plane's) in us-east and a delta stream in eu-west.
func TestRegionsAndAdminAPI(t *testing.T) {
	cfg := testenv.Config(t)
	logs := &testenv.LogBuffer{}
	admin := xdstest.Start(t, cfg, logs.Logger(t), xdstest.Options{})
	east := admin.Create(registry.CreateRequest{Name: "East Sandbox", Tier: schemas.TierSandbox, Regions: []string{"us-east"},
		Features: map[string]bool{"reports": true}})
	r := startServer(t, cfg, admin.Registry)
	west := admin.Create(registry.CreateRequest{Name: "West Standard", Tier: schemas.TierStandard, Regions: []string{"eu-west"}})

	us := newADS(t, r.conn, "us-east", resource.ListenerType)
	v := view(t, unpackAll(t, us.fetch()), nil)
	if _, ok := v.buckets[east.ID]; !ok {
		t.Fatalf("us-east listener lacks %s's bucket", east.ID)
	}
	if _, ok := v.buckets[west.ID]; ok {
		t.Fatalf("us-east listener has eu-west tenant %s", west.ID)
	}
	if err := us.c.Ack(); err != nil {
		t.Fatal(err)
	}

	// The tenant created after the server started arrives with the next
	// version; the stream may see the one before it first.
	eu := newDelta(t, r.conn, "eu-west", resource.ListenerType, resource.RouteType)
	var lis, routes []any
	for lis == nil || routes == nil || view(t, lis, routes).routes[west.ID] == nil {
		resp := eu.recv()
		eu.ack(resp)
		switch resp.GetTypeUrl() {
		case resource.ListenerType:
			lis = deltaResources(t, resp)
		case resource.RouteType:
			routes = deltaResources(t, resp)
		}
	}
	v = view(t, lis, routes)
	if b := v.buckets[west.ID]; b == nil || b.GetTokenBucket().GetMaxTokens() != 10 {
		t.Fatalf("eu-west bucket of %s = %v, want the standard tier's burst 10", west.ID, b)
	}
	if _, ok := v.buckets[east.ID]; ok {
		t.Fatal("eu-west has the us-east tenant")
	}
	if rs := v.routes[west.ID]; len(rs) != 1 || rs[0].GetRoute().GetCluster() != xds.ClusterProduction {
		t.Fatalf("eu-west routes of %s = %v", west.ID, rs)
	}

	// Suspending the us-east tenant changes us-east only.
	euVersion := r.srv.Version("eu-west")
	usVersion := r.srv.Version("us-east")
	admin.Suspend(east.ID)
	v = view(t, unpackAll(t, us.fetch()), nil)
	if _, ok := v.buckets[east.ID]; ok {
		t.Fatal("suspended tenant still has a bucket in us-east")
	}
	if err := us.c.Ack(); err != nil {
		t.Fatal(err)
	}
	if xds.VersionSeq(r.srv.Version("us-east")) <= xds.VersionSeq(usVersion) {
		t.Fatalf("us-east version %s did not increase from %s", r.srv.Version("us-east"), usVersion)
	}
	if got := r.srv.Version("eu-west"); got != euVersion {
		t.Fatalf("eu-west version changed %s -> %s on a us-east tenant change", euVersion, got)
	}

	// Re-tiering the eu-west tenant reaches the delta stream.
	tier := schemas.TierEnterprise
	admin.Patch(west.ID, registry.Patch{Tier: &tier})
	v = view(t, deltaResources(t, eu.recvType(resource.ListenerType)), nil)
	b := v.buckets[west.ID].GetTokenBucket()
	if b.GetMaxTokens() != 50 || b.GetTokensPerFill().GetValue() != 5 || b.GetFillInterval().AsDuration() != time.Second {
		t.Fatalf("re-tiered bucket = %v, want enterprise 50 burst, 5/s", b)
	}

	// A tenant created in both regions appears in both.
	both := admin.Create(registry.CreateRequest{Name: "Both", Tier: schemas.TierStandard})
	v = view(t, unpackAll(t, us.fetch()), nil)
	if _, ok := v.buckets[both.ID]; !ok {
		t.Fatal("new tenant missing in us-east")
	}
	v = view(t, deltaResources(t, eu.recvType(resource.ListenerType)), nil)
	if _, ok := v.buckets[both.ID]; !ok {
		t.Fatal("new tenant missing in eu-west")
	}
	if got := r.metric("partners_xds_nacks_total"); got != 0 {
		t.Fatalf("%v NACKs", got)
	}
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
	tenants := xds.NewStaticTenants(tenantFixture("tn_one", schemas.TierStandard, "us-east"))
	r := startServer(t, cfg, tenants)

	ads := newADS(t, r.conn, "us-east", resource.ListenerType)
	ads.fetch()
	if err := ads.c.Nack("listener partners-https: fake rejection for the test"); err != nil {
		t.Fatal(err)
	}
	delta := newDelta(t, r.conn, "us-east", resource.ListenerType)
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

	// A new snapshot is sent to both.
	tenants.Put(tenantFixture("tn_two", schemas.TierStandard, "us-east"))
	select {
	case res, ok := <-pending:
		if !ok {
			t.Fatal("SotW stream ended")
		}
		if _, found := view(t, unpackAll(t, res), nil).buckets["tn_two"]; !found {
			t.Fatal("new version lacks the new tenant")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no SotW response after a new snapshot")
	}
	if _, found := view(t, deltaResources(t, delta.recvType(resource.ListenerType)), nil).buckets["tn_two"]; !found {
		t.Fatal("delta: new version lacks the new tenant")
	}
}

func TestUnknownRegionGetsEmptyConfig(t *testing.T) {
	cfg := testenv.Config(t)
	r := startServer(t, cfg, xds.NewStaticTenants(tenantFixture("tn_one", schemas.TierStandard, "us-east")))
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

// TestInvalidBuildRefused: a build that fails validation is refused and
// counted, the region keeps serving its last good snapshot, and the next
// valid build gets the next version.
func TestInvalidBuildRefused(t *testing.T) {
	cfg := testenv.Config(t)
	tenants := xds.NewStaticTenants(tenantFixture("tn_one", schemas.TierStandard, "us-east"))
	r := startServer(t, cfg, tenants)
	good := r.srv.Version("us-east")

	r.cfg.XDS.ConnectTimeout = 0 // clusters' connect_timeout must be > 0
	tenants.Put(tenantFixture("tn_two", schemas.TierStandard, "us-east"))
	testenv.Eventually(t, 10*time.Second, "refused build counted", func() bool {
		return r.metric("partners_xds_snapshots_refused_total") == 1
	})
	if got := r.srv.Version("us-east"); got != good {
		t.Fatalf("version moved to %s after a refused build", got)
	}
	if !strings.Contains(r.logs.String(), "snapshot refused") || !strings.Contains(r.logs.String(), "ConnectTimeout") {
		t.Fatalf("refusal not logged with its reason:\n%s", r.logs.String())
	}
	ads := newADS(t, r.conn, "us-east", resource.ListenerType)
	if _, found := view(t, unpackAll(t, ads.fetch()), nil).buckets["tn_two"]; found {
		t.Fatal("the refused snapshot was served")
	}
	if err := ads.c.Ack(); err != nil {
		t.Fatal(err)
	}

	r.cfg.XDS.ConnectTimeout = time.Second
	tenants.Put(tenantFixture("tn_three", schemas.TierStandard, "us-east"))
	if _, found := view(t, unpackAll(t, ads.fetch()), nil).buckets["tn_two"]; !found {
		t.Fatal("the next good snapshot lacks tn_two")
	}
	if got := xds.VersionSeq(r.srv.Version("us-east")); got != xds.VersionSeq(good)+1 {
		t.Fatalf("version seq %d, want %d", got, xds.VersionSeq(good)+1)
	}
}

// TestFetchMatchesSnapshot: the operators' dump (delta fetch) returns what
// the snapshot holds.
func TestFetchMatchesSnapshot(t *testing.T) {
	cfg := testenv.Config(t)
	r := startServer(t, cfg, xds.NewStaticTenants(goldenTenants()...))
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
	if !strings.Contains(string(got), r.srv.Version("eu-west")) {
		t.Fatalf("dump lacks the listener version %s:\n%.400s", r.srv.Version("eu-west"), got)
	}
}
