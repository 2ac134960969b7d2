package xds

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Fetched is what one node receives for a region.
type Fetched struct {
	Region    string
	Versions  map[string]string          // type URL -> system version
	Resources map[string][]proto.Message // type URL -> resources, sorted by name
}

// FromSnapshot returns a snapshot's resources in the Fetched shape.
func FromSnapshot(region string, snap *cachev3.Snapshot) *Fetched {
	f := &Fetched{Region: region, Versions: map[string]string{}, Resources: map[string][]proto.Message{}}
	for _, typ := range ResourceTypes {
		f.Versions[typ] = snap.GetVersion(typ)
		names := make([]string, 0)
		rs := snap.GetResources(typ)
		for n := range rs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			f.Resources[typ] = append(f.Resources[typ], rs[n])
		}
	}
	return f
}

// FromResources returns built resources in the Fetched shape.
func FromResources(region string, res Resources) *Fetched {
	snap, _ := cachev3.NewSnapshot("", res)
	return FromSnapshot(region, snap)
}

// Fetch asks a running control plane for region's resources the way an
// Envoy of that region does: a delta ADS stream with a wildcard
// subscription per type (and the rate-limit service's type), each response
// ACKed.
func Fetch(ctx context.Context, conn grpc.ClientConnInterface, region, nodeID string) (*Fetched, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("open delta ADS stream: %w", err)
	}
	node := &core.Node{Id: nodeID, Cluster: region}
	for _, typ := range ResourceTypes {
		if err := st.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			return nil, fmt.Errorf("subscribe %s: %w", shortType(typ), err)
		}
	}
	f := &Fetched{Region: region, Versions: map[string]string{}, Resources: map[string][]proto.Message{}}
	byName := map[string]map[string]proto.Message{}
	for len(f.Versions) < len(ResourceTypes) {
		resp, err := st.Recv()
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		typ := resp.GetTypeUrl()
		if byName[typ] == nil {
			byName[typ] = map[string]proto.Message{}
		}
		for _, r := range resp.GetResources() {
			m, err := r.GetResource().UnmarshalNew()
			if err != nil {
				return nil, fmt.Errorf("%s %q: %w", shortType(typ), r.GetName(), err)
			}
			byName[typ][r.GetName()] = m
		}
		f.Versions[typ] = resp.GetSystemVersionInfo()
		if err := st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}); err != nil {
			return nil, fmt.Errorf("ack %s: %w", shortType(typ), err)
		}
	}
	for typ, m := range byName {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			f.Resources[typ] = append(f.Resources[typ], m[n])
		}
	}
	_ = st.CloseSend()
	return f, nil
}

// FetchTimeout bounds Fetch for operators' tools.
const FetchTimeout = 10 * time.Second

// YAML renders f for operators: the region, the version of each type and
// every resource as Envoy's JSON mapping (proto field names, packed configs
// expanded with their @type), in stable order.
func (f *Fetched) YAML() ([]byte, error) {
	doc := struct {
		Region    string            `yaml:"region"`
		Versions  map[string]string `yaml:"versions"`
		Clusters  []any             `yaml:"clusters"`
		Secrets   []any             `yaml:"secrets"`
		Listeners []any             `yaml:"listeners"`
		Routes    []any             `yaml:"routes"`
		RateLimit []any             `yaml:"rate_limit_configs"`
	}{Region: f.Region, Versions: map[string]string{}}
	for typ, v := range f.Versions {
		doc.Versions[shortType(typ)] = v
	}
	mo := protojson.MarshalOptions{UseProtoNames: true}
	for _, typ := range ResourceTypes {
		list := []any{}
		for _, m := range f.Resources[typ] {
			b, err := mo.Marshal(m)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", shortType(typ), err)
			}
			var v any
			if err := yaml.Unmarshal(b, &v); err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		switch typ {
		case typeCluster:
			doc.Clusters = list
		case typeSecret:
			doc.Secrets = list
		case typeListener:
			doc.Listeners = list
		case typeRoute:
			doc.Routes = list
		case typeRateLimit:
			doc.RateLimit = list
		}
	}
	return yaml.Marshal(doc)
}

// Unpack returns the message packed in a, for tests and tools.
func Unpack[T proto.Message](a *anypb.Any) (T, error) {
	var zero T
	m, err := a.UnmarshalNew()
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, errors.New("unexpected type " + a.GetTypeUrl())
	}
	return t, nil
}
