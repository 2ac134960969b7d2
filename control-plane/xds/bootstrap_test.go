package xds_test

import (
	"encoding/json"
	"os"
	"testing"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/partners-engine/partners-engine/control-plane/xds"
)

// TestEnvoyBootstrap parses deploy/envoy/envoy.yaml as Envoy would (YAML →
// the Bootstrap proto, unknown fields rejected) and validates it, including
// its packed configs: delta ADS to the control plane, node cluster = a
// configured region.
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
	cl := b.GetStaticResources().GetClusters()
	if len(cl) != 1 || cl[0].GetName() != ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() {
		t.Fatalf("static clusters %v do not match the ADS service", cl)
	}
	port := cl[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
	if port != 18000 {
		t.Fatalf("xds cluster port %d, want listeners.xds port 18000", port)
	}
}
