package xds_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/partners-engine/partners-engine/control-plane/xds"
)

// TestEnvoyBootstrap parses deploy/envoy/envoy.yaml as Envoy would (YAML →
// the Bootstrap proto, unknown fields rejected) and validates it, including
// its packed configs: delta ADS to the control plane, node cluster = a
// configured region, the admin interface on loopback only and exposed just
// for /stats/prometheus and /ready through the stats listener.
func TestEnvoyBootstrap(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrap.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatalf("bootstrap does not parse as envoy.config.bootstrap.v3.Bootstrap: %v", err)
	}
	n, err := xds.ValidateResource(&b)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("the xds cluster's protocol options were not unpacked")
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetApiType() != core.ApiConfigSource_DELTA_GRPC || ads.GetTransportApiVersion() != core.ApiVersion_V3 {
		t.Fatalf("ADS config %v: want delta gRPC v3", ads)
	}
	cfg := goldenConfig(t)
	if _, ok := cfg.Region(xds.NodeRegion(b.GetNode())); !ok {
		t.Fatalf("node cluster %q is not a configured region %v", b.GetNode().GetCluster(), cfg.RegionNames())
	}
	var xdsCluster *cluster.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() {
			xdsCluster = c
		}
	}
	if xdsCluster == nil {
		t.Fatalf("no static cluster for the ADS service")
	}
	port := xdsCluster.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
	if port != 18000 {
		t.Fatalf("xds cluster port %d, want listeners.xds port 18000", port)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" && a != "::1" {
		t.Fatalf("admin interface on %q: want loopback only", a)
	}
	// The stats listener routes only the read-only admin paths.
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 {
		t.Fatalf("%d static listeners, want the stats listener only", len(ls))
	}
	m, err := xds.Unpack[*hcm.HttpConnectionManager](ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, r := range m.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
		paths = append(paths, r.GetMatch().GetPath())
	}
	if strings.Join(paths, ",") != "/stats/prometheus,/ready" {
		t.Fatalf("stats listener exposes %v of the admin interface", paths)
	}
}
