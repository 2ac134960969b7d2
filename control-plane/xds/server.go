package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/partners-engine/partners-engine/internal/grpcx"
)

const (
	typeListener  = resource.ListenerType
	typeRoute     = resource.RouteType
	typeCluster   = resource.ClusterType
	typeSecret    = resource.SecretType
	typeRateLimit = resource.RateLimitConfigType

	// UnknownRegion is the snapshot key of nodes whose cluster (or locality
	// or metadata region) names no configured region. Its snapshot is
	// empty: such an Envoy gets a clear, valid "nothing to serve" and no
	// NACK loop, and the control plane logs it.
	UnknownRegion = "_unknown"

	// StopGrace bounds the graceful stop: xDS streams never end by
	// themselves, so after it the remaining ones are cut.
	StopGrace = 5 * time.Second
)

// ResourceTypes are the xDS types the control plane serves, in the order
// Envoy should apply them. Envoys subscribe to the first four; the
// rate-limit service of the region to RateLimitConfig.
var ResourceTypes = []string{typeCluster, typeSecret, typeListener, typeRoute, typeRateLimit}

// EnvoyTypes are the types an Envoy subscribes to.
var EnvoyTypes = ResourceTypes[:4]

func shortType(t string) string { return t[strings.LastIndex(t, ".")+1:] }

// Options configure a Server.
type Options struct {
	Config     *Config
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
}

// Server is the xDS control plane: per-region snapshots in a go-control-plane
// snapshot cache served over ADS (SotW and delta). Nodes are mapped to a
// region by node.cluster, else node.locality.region, else the node metadata
// field "region" (what the rate-limit service can set).
type Server struct {
	log     *slog.Logger
	cache   cachev3.SnapshotCache
	regions map[string]bool
	boot    int64

	mu       sync.Mutex // orders rebuilds; guards cfg, seq, versions, notify
	cfg      *Config
	seq      map[string]uint64
	versions map[string]string
	notify   chan struct{} // closed and replaced when any region gets a new version

	streamsMu sync.Mutex
	streams   map[int64]*streamState

	m metrics
}

type metrics struct {
	pushes, refused, acks, nacks *prometheus.CounterVec
	unknownNodes                 prometheus.Counter
	streams                      prometheus.Gauge
	buildSeconds                 prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_snapshots_pushed_total",
			Help: "Snapshots set in the cache (a new version for a region)."}, []string{"region"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_snapshots_refused_total",
			Help: "Snapshot builds refused by Consistent() or ValidateAll(); the region kept its last good snapshot."}, []string{"region"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_acks_total",
			Help: "Responses Envoy acknowledged."}, []string{"region", "type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_nacks_total",
			Help: "Responses Envoy rejected (error_detail set)."}, []string{"region", "type"}),
		unknownNodes: prometheus.NewCounter(prometheus.CounterOpts{Name: "partners_xds_unknown_region_streams_total",
			Help: "xDS streams from nodes whose region is not configured (served an empty snapshot)."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "partners_xds_streams", Help: "Open xDS streams."}),
		buildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "partners_xds_snapshot_build_seconds",
			Help: "Time to build and validate one region's snapshot.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pushes, m.refused, m.acks, m.nacks, m.unknownNodes, m.streams, m.buildSeconds} {
			if err := reg.Register(c); err != nil {
				return m, fmt.Errorf("xds metrics: %w", err)
			}
		}
	}
	return m, nil
}

// New builds the first snapshot of every region. It starts nothing (Serve
// does) and fails if a region's snapshot cannot be built (a configuration
// error: no Envoy would get a valid config).
func New(opt Options) (*Server, error) {
	m, err := newMetrics(opt.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      opt.Config,
		log:      opt.Log.With("component", "xds"),
		regions:  map[string]bool{},
		boot:     time.Now().UnixMilli(),
		seq:      map[string]uint64{},
		versions: map[string]string{},
		notify:   make(chan struct{}),
		streams:  map[int64]*streamState{},
		m:        m,
	}
	for _, r := range opt.Config.RegionNames() {
		s.regions[r] = true
	}
	s.cache = cachev3.NewSnapshotCache(true, regionHash{known: s.regions}, logAdapter{s.log})
	empty, _ := cachev3.NewSnapshot(fmt.Sprintf("%d.0", s.boot), map[resource.Type][]types.Resource{
		typeCluster: nil, typeSecret: nil, typeListener: nil, typeRoute: nil, typeRateLimit: nil,
	})
	if err := s.cache.SetSnapshot(context.Background(), UnknownRegion, empty); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range opt.Config.RegionNames() {
		if err := s.rebuild(r); err != nil {
			return nil, fmt.Errorf("initial snapshot of region %s: %w", r, err)
		}
	}
	return s, nil
}

// Reload rebuilds every region from cfg (the same regions as before: a
// region added or removed needs a restart) and serves what changed. Envoy
// gets only the resources that differ (delta xDS), so a change of a tier's
// failure policy or an upstream touches routes or clusters and leaves the
// listeners alone. A configuration that does not build is refused whole: every
// region keeps its snapshot.
func (s *Server) Reload(cfg *Config) error {
	names := cfg.RegionNames()
	if len(names) != len(s.regions) {
		return fmt.Errorf("reload: regions changed (%v): restart the control plane to add or remove a region", names)
	}
	for _, r := range names {
		if !s.regions[r] {
			return fmt.Errorf("reload: region %q is new: restart the control plane to add a region", r)
		}
	}
	for _, r := range names {
		res, err := NewBuilder(cfg).Build(r)
		if err == nil {
			var snap *cachev3.Snapshot
			if snap, err = cachev3.NewSnapshot("check", res); err == nil {
				_, err = Validate(snap)
			}
		}
		if err != nil {
			s.m.refused.WithLabelValues(r).Inc()
			s.log.Error("snapshot refused; every region keeps its last good snapshot", "region", r,
				"kept_version", s.Version(r), "err", err)
			return fmt.Errorf("reload: region %s: %w", r, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	for _, r := range names {
		if err := s.rebuild(r); err != nil {
			return err
		}
	}
	return nil
}

// NodeRegion is the region a node asks for: node.cluster, else
// node.locality.region, else the string field "region" of node.metadata.
func NodeRegion(n *core.Node) string {
	if c := n.GetCluster(); c != "" {
		return c
	}
	if r := n.GetLocality().GetRegion(); r != "" {
		return r
	}
	return n.GetMetadata().GetFields()["region"].GetStringValue()
}

type regionHash struct{ known map[string]bool }

func (h regionHash) ID(n *core.Node) string {
	if r := NodeRegion(n); h.known[r] {
		return r
	}
	return UnknownRegion
}

// rebuild builds, validates and sets region's next snapshot; s.mu is held.
// An invalid build is refused: logged, counted, and the last good snapshot
// stays.
func (s *Server) rebuild(region string) error {
	start := time.Now()
	res, err := NewBuilder(s.cfg).Build(region)
	version := fmt.Sprintf("%d.%d", s.boot, s.seq[region]+1)
	var snap *cachev3.Snapshot
	if err == nil {
		snap, err = cachev3.NewSnapshot(version, res)
	}
	if err == nil {
		_, err = Validate(snap)
	}
	if err != nil {
		s.m.refused.WithLabelValues(region).Inc()
		s.log.Error("snapshot refused; the region keeps its last good snapshot", "region", region,
			"version", version, "kept_version", s.versions[region], "err", err)
		return err
	}
	// A type whose resources did not change keeps its version, so no node,
	// SotW or delta, hears about it again; nothing changed: nothing is set.
	if prev, perr := s.Snapshot(region); perr == nil {
		changed := false
		for _, typ := range ResourceTypes {
			idx := cachev3.GetResponseType(typ)
			if sameResources(prev, snap, typ) {
				snap.Resources[idx].Version = prev.Resources[idx].Version
			} else {
				changed = true
			}
		}
		if !changed {
			return nil
		}
	}
	if err := s.cache.SetSnapshot(context.Background(), region, snap); err != nil {
		s.m.refused.WithLabelValues(region).Inc()
		s.log.Error("set snapshot", "region", region, "version", version, "err", err)
		return err
	}
	s.seq[region]++
	s.versions[region] = version
	close(s.notify)
	s.notify = make(chan struct{})
	s.m.pushes.WithLabelValues(region).Inc()
	s.m.buildSeconds.Observe(time.Since(start).Seconds())
	s.log.Info("snapshot set", "region", region, "version", version,
		"routes", routeCount(res), "took", time.Since(start).Round(time.Microsecond))
	return nil
}

func routeCount(res Resources) int {
	n := 0
	for _, r := range res[typeRoute] {
		if rc, ok := r.(*route.RouteConfiguration); ok {
			for _, vh := range rc.GetVirtualHosts() {
				n += len(vh.GetRoutes())
			}
		}
	}
	return n
}

// Version returns region's current snapshot version ("" before the first).
func (s *Server) Version(region string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[region]
}

// Changed returns a channel closed at the next new version of any region.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notify
}

// Snapshot returns region's current snapshot.
func (s *Server) Snapshot(region string) (*cachev3.Snapshot, error) {
	rs, err := s.cache.GetSnapshot(region)
	if err != nil {
		return nil, err
	}
	snap, ok := rs.(*cachev3.Snapshot)
	if !ok {
		return nil, errors.New("unexpected snapshot type")
	}
	return snap, nil
}

// VersionSeq returns the sequence number of a version string (its part
// after the boot epoch), for comparisons.
func VersionSeq(v string) uint64 {
	_, seq, _ := strings.Cut(v, ".")
	n, _ := strconv.ParseUint(seq, 10, 64)
	return n
}

// Serve serves ADS (and the per-type discovery services) on lis until ctx
// ends, over mutual TLS when xds.server_tls is set, then stops within
// StopGrace.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.mu.Lock()
	tlsCfg := s.cfg.XDS.ServerTLS.Server()
	s.mu.Unlock()
	creds, err := grpcx.ServerCredentials(tlsCfg)
	if err != nil {
		return fmt.Errorf("xds.server_tls: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.MaxConcurrentStreams(100_000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	srv := serverv3.NewServer(ctx, s.cache, s.callbacks())
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, srv)
	return grpcx.Serve(ctx, gs, lis, StopGrace)
}

// logAdapter routes go-control-plane's logs to slog. Its Infof lines are
// per-watch chatter and go to debug.
type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Debugf(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l logAdapter) Infof(f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l logAdapter) Warnf(f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l logAdapter) Errorf(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }
