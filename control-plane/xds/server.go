package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
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

	"github.com/partners-engine/partners-engine/schemas"
)

const (
	typeListener = resource.ListenerType
	typeRoute    = resource.RouteType
	typeCluster  = resource.ClusterType
	typeSecret   = resource.SecretType

	// UnknownRegion is the snapshot key of nodes whose cluster (or locality
	// region) names no configured region. Its snapshot is empty: such an
	// Envoy gets a clear, valid "nothing to serve" and no NACK loop, and
	// the control plane logs it.
	UnknownRegion = "_unknown"
)

// ResourceTypes are the xDS types the control plane serves, in the order
// Envoy should apply them.
var ResourceTypes = []string{typeCluster, typeSecret, typeListener, typeRoute}

func shortType(t string) string { return t[strings.LastIndex(t, ".")+1:] }

// Tenants is what the control plane needs of the registry.
type Tenants interface {
	List() []*schemas.Tenant
	// OnChange registers fn for every tenant change; cancel unregisters it.
	OnChange(fn func(old, new *schemas.Tenant)) (cancel func())
}

// Options configure a Server.
type Options struct {
	Config     *Config
	Tenants    Tenants
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
}

// Server is the xDS control plane: per-region snapshots in a go-control-plane
// snapshot cache served over ADS (SotW and delta). Nodes are mapped to a
// region by node.cluster, or node.locality.region when cluster is empty.
type Server struct {
	cfg     *Config
	tenants Tenants
	log     *slog.Logger
	builder *Builder
	cache   cachev3.SnapshotCache
	regions map[string]bool
	boot    int64

	mu       sync.Mutex
	seq      map[string]uint64
	versions map[string]string
	notify   chan struct{} // closed and replaced when any region gets a new version
	reported map[tenantKey]bool

	dirtyMu sync.Mutex
	dirty   map[string]bool
	kick    chan struct{}

	streamsMu sync.Mutex
	streams   map[int64]*streamState

	m metrics
}

type metrics struct {
	pushes, refused, acks, nacks, tenantIssues *prometheus.CounterVec
	unknownNodes                               prometheus.Counter
	streams                                    prometheus.Gauge
	buildSeconds                               prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_snapshots_pushed_total",
			Help: "Snapshots set in the cache (a new version for a region)."}, []string{"region"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_snapshots_refused_total",
			Help: "Snapshot builds refused by Consistent() or ValidateAll(); the region kept its last good snapshot."}, []string{"region"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_acks_total",
			Help: "Responses Envoy acknowledged."}, []string{"region", "type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_nacks_total",
			Help: "Responses Envoy rejected (error_detail set)."}, []string{"region", "type"}),
		tenantIssues: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "partners_xds_tenant_config_issues_total",
			Help: "Tenant versions whose config could not be served as written (excluded, or tier default used)."}, []string{"outcome"}),
		unknownNodes: prometheus.NewCounter(prometheus.CounterOpts{Name: "partners_xds_unknown_region_streams_total",
			Help: "xDS streams from nodes whose region is not configured (served an empty snapshot)."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "partners_xds_streams", Help: "Open xDS streams."}),
		buildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "partners_xds_snapshot_build_seconds",
			Help: "Time to build and validate one region's snapshot.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	if reg != nil {
		reg.MustRegister(m.pushes, m.refused, m.acks, m.nacks, m.tenantIssues, m.unknownNodes, m.streams, m.buildSeconds)
	}
	return m
}

// New builds the first snapshot of every region from the tenants known now
// and subscribes to tenant changes. Call it once the registry is loaded. It
// fails if a region's first snapshot cannot be built (a configuration
// error: no Envoy would get a valid config).
func New(opt Options) (*Server, error) {
	b, err := NewBuilder(opt.Config)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      opt.Config,
		tenants:  opt.Tenants,
		log:      opt.Log.With("component", "xds"),
		builder:  b,
		regions:  map[string]bool{},
		boot:     time.Now().UnixMilli(),
		seq:      map[string]uint64{},
		versions: map[string]string{},
		notify:   make(chan struct{}),
		reported: map[tenantKey]bool{},
		dirty:    map[string]bool{},
		kick:     make(chan struct{}, 1),
		streams:  map[int64]*streamState{},
		m:        newMetrics(opt.Registerer),
	}
	for _, r := range opt.Config.RegionNames() {
		s.regions[r] = true
	}
	s.cache = cachev3.NewSnapshotCache(true, regionHash{known: s.regions}, logAdapter{s.log})
	empty, _ := cachev3.NewSnapshot(fmt.Sprintf("%d.0", s.boot), map[resource.Type][]types.Resource{
		typeCluster: nil, typeSecret: nil, typeListener: nil, typeRoute: nil,
	})
	if err := s.cache.SetSnapshot(context.Background(), UnknownRegion, empty); err != nil {
		return nil, err
	}
	opt.Tenants.OnChange(s.onChange)
	for _, r := range opt.Config.RegionNames() {
		if err := s.rebuild(r); err != nil {
			return nil, fmt.Errorf("initial snapshot of region %s: %w", r, err)
		}
	}
	return s, nil
}

// NodeRegion is the region a node asks for: node.cluster, else
// node.locality.region.
func NodeRegion(n *core.Node) string {
	if c := n.GetCluster(); c != "" {
		return c
	}
	return n.GetLocality().GetRegion()
}

type regionHash struct{ known map[string]bool }

func (h regionHash) ID(n *core.Node) string {
	if r := NodeRegion(n); h.known[r] {
		return r
	}
	return UnknownRegion
}

// onChange marks the regions a tenant change affects (before and after: a
// tenant moved out of a region must disappear there) and wakes the rebuild
// loop. It never blocks the registry.
func (s *Server) onChange(old, new *schemas.Tenant) {
	s.dirtyMu.Lock()
	for _, t := range []*schemas.Tenant{old, new} {
		if t == nil {
			continue
		}
		for _, r := range t.Regions {
			if s.regions[r] {
				s.dirty[r] = true
			}
		}
	}
	s.dirtyMu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// rebuildLoop rebuilds dirty regions until ctx ends, coalescing bursts of
// changes that arrive within the debounce window.
func (s *Server) rebuildLoop(ctx context.Context) {
	debounce := s.cfg.XDS.RebuildDebounce
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		if debounce > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(debounce):
			}
		}
		s.dirtyMu.Lock()
		dirty := s.dirty
		s.dirty = map[string]bool{}
		s.dirtyMu.Unlock()
		for _, r := range s.cfg.RegionNames() {
			if dirty[r] {
				_ = s.rebuild(r) // logged and counted; the region keeps its last good snapshot
			}
		}
	}
}

// rebuild builds, validates and sets region's next snapshot. An invalid
// build is refused: logged, counted, and the last good snapshot stays.
func (s *Server) rebuild(region string) error {
	start := time.Now()
	res, skipped, err := s.builder.Build(region, s.tenants.List())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reportSkipped(region, skipped)
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
		"routes", routeCount(res),
		"took", time.Since(start).Round(time.Microsecond))
	return nil
}

// reportSkipped logs each tenant version with a config problem once.
func (s *Server) reportSkipped(region string, skipped []Skipped) {
	for _, sk := range skipped {
		k := tenantKey{id: sk.TenantID, version: sk.Version}
		if s.reported[k] {
			continue
		}
		if len(s.reported) > 100_000 {
			s.reported = map[tenantKey]bool{} // bound: some warnings repeat
		}
		s.reported[k] = true
		outcome := "tier_default"
		if sk.Excluded {
			outcome = "excluded"
		}
		s.m.tenantIssues.WithLabelValues(outcome).Inc()
		s.log.Warn("tenant config cannot be served as written", "tenant_id", sk.TenantID, "region", region, "outcome", outcome, "reason", sk.Reason)
	}
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
// ends, and rebuilds regions on tenant changes meanwhile.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := serverv3.NewServer(ctx, s.cache, s.callbacks())
	gs := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.MaxConcurrentStreams(100_000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	)
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, srv)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.rebuildLoop(ctx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop() // xDS streams never end by themselves
		}
		err = <-errc
	}
	cancel()
	wg.Wait()
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// logAdapter routes go-control-plane's logs to slog. Its Infof lines are
// per-watch chatter and go to debug.
type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Debugf(f string, a ...any) { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l logAdapter) Infof(f string, a ...any)  { l.log.Debug(fmt.Sprintf(f, a...)) }
func (l logAdapter) Warnf(f string, a ...any)  { l.log.Warn(fmt.Sprintf(f, a...)) }
func (l logAdapter) Errorf(f string, a ...any) { l.log.Error(fmt.Sprintf(f, a...)) }

// StaticTenants is an in-memory tenant source for tools, benchmarks and
// tests: Put applies a change and notifies like the registry does.
type StaticTenants struct {
	mu       sync.Mutex
	tenants  map[string]*schemas.Tenant
	watchers []*func(old, new *schemas.Tenant)
}

// NewStaticTenants returns a source holding ts.
func NewStaticTenants(ts ...*schemas.Tenant) *StaticTenants {
	s := &StaticTenants{tenants: map[string]*schemas.Tenant{}}
	for _, t := range ts {
		s.tenants[t.ID] = t
	}
	return s
}

// List returns every tenant.
func (s *StaticTenants) List() []*schemas.Tenant {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*schemas.Tenant, 0, len(s.tenants))
	for _, t := range s.tenants {
		out = append(out, t)
	}
	return out
}

// OnChange registers fn; cancel unregisters it.
func (s *StaticTenants) OnChange(fn func(old, new *schemas.Tenant)) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &fn
	s.watchers = append(s.watchers, p)
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.watchers = slices.DeleteFunc(s.watchers, func(x *func(old, new *schemas.Tenant)) bool { return x == p })
	}
}

// Put stores t (replacing the tenant with its id) and notifies watchers.
func (s *StaticTenants) Put(t *schemas.Tenant) {
	s.mu.Lock()
	old := s.tenants[t.ID]
	s.tenants[t.ID] = t
	ws := slices.Clone(s.watchers)
	s.mu.Unlock()
	for _, w := range ws {
		(*w)(old, t)
	}
}
