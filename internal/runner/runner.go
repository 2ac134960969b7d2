// Package runner is the composition root of partners-engine. For each mode
// (`partners dev`, `control-plane`, `edge`, `webhooks`, `attribution`) it
// decides which components run, hands each its own configuration sections,
// mounts exactly the HTTP routes of the mode (routes.ByMode), and owns the
// process's lifecycle: start in dependency order, then on shutdown stop
// intake and let components drain and commit, stop the tenant registry,
// flush and close the clients — every phase bounded. cmd/partners turns
// flags into Options and calls Run; tests start a Runner in-process the same
// way (envoyproxy/ratelimit's runner is the model).
//
// Where each component lives: the tenant registry and its writer in
// control-plane/registry, the HTTP server and tenant API in
// control-plane/adminapi, xDS in control-plane/xds, ext_authz in
// edge/authz, the webhooks processor and its DLQ/test routes in
// processors/webhooks, attribution and ROI in processors/attribution.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/partners-engine/partners-engine/control-plane/adminapi"
	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/runner/routes"
	"github.com/partners-engine/partners-engine/internal/telemetry"
	"github.com/partners-engine/partners-engine/processors/webhooks"
	"github.com/partners-engine/partners-engine/schemas"
)

// Mode is a process mode (routes.Mode).
type Mode = routes.Mode

// The modes.
const (
	Dev          = routes.Dev
	ControlPlane = routes.ControlPlane
	Edge         = routes.Edge
	Webhooks     = routes.Webhooks
	Attribution  = routes.Attribution
)

// Listener names, for Addr.
const (
	ListenAdmin    = "admin"     // listeners.admin: the HTTP API of the mode's routes
	ListenXDS      = "xds"       // listeners.xds: ADS (control-plane, dev)
	ListenExtAuthz = "ext_authz" // listeners.ext_authz: the Envoy plugin (edge, dev)
)

// HTTP server bounds of listeners.admin.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 2 * time.Minute // DLQ list and replay read the whole DLQ topic
	idleTimeout       = 2 * time.Minute
)

// Options configure a Runner.
type Options struct {
	Mode   Mode
	Config *config.Config // loaded and validated (config.Load)
	Log    *slog.Logger   // nil: discarded
	// Banner receives the "what listens where" lines once every listener
	// is bound, followed by Hints; nil: the lines are logged.
	Banner io.Writer
	Hints  []string
	// StartClickHouse starts a local ClickHouse server. It is called only in
	// dev mode, with clickhouse.auto_start set, when ClickHouse is
	// unreachable (cmd/partners runs deploy/local/clickhouse.sh).
	StartClickHouse func(ctx context.Context) error
	// TracerProvider traces the components; nil: telemetry.Setup installs
	// the process-wide providers from the OTEL_* environment (the binary).
	// Tests pass their own and stay isolated from each other.
	TracerProvider trace.TracerProvider
	// Metrics is the registry /metrics serves; nil: a new one with the Go
	// and process collectors.
	Metrics *prometheus.Registry
	// ShutdownTimeout bounds each shutdown phase (default 30s).
	ShutdownTimeout time.Duration
}

// Runner runs one mode.
type Runner struct {
	opt Options
	cfg *config.Config
	log *slog.Logger

	ready chan struct{}
	mu    sync.Mutex
	addrs map[string]string
}

// New checks the options; it starts nothing. Every mode but dev refuses a
// configuration with development values (config.DevOnly).
func New(opt Options) (*Runner, error) {
	if _, ok := routes.ByMode[opt.Mode]; !ok {
		return nil, fmt.Errorf("runner: unknown mode %q", opt.Mode)
	}
	if opt.Config == nil {
		return nil, errors.New("runner: no configuration")
	}
	if err := opt.Config.Validate(); err != nil {
		return nil, err
	}
	if opt.Mode != Dev {
		if err := opt.Config.DevOnly(); err != nil {
			return nil, fmt.Errorf("partners %s refuses values only `partners dev` accepts: %w", opt.Mode, err)
		}
		if len(opt.Config.Kafka.Brokers) == 0 {
			return nil, errors.New("kafka.brokers is empty: set PARTNERS_KAFKA_BROKERS (only `partners dev` starts the embedded broker)")
		}
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.ShutdownTimeout <= 0 {
		opt.ShutdownTimeout = 30 * time.Second
	}
	return &Runner{opt: opt, cfg: opt.Config, log: opt.Log, ready: make(chan struct{}), addrs: map[string]string{}}, nil
}

// Ready is closed once every listener of the mode is bound and every
// component started.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// Addr is the bound address of a listener (ListenAdmin, ...) once Ready;
// "" if the mode has none.
func (r *Runner) Addr(listener string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addrs[listener]
}

// component is one long-running part of the process. Serving components
// (listeners, processors) stop first, followers (the tenant registry) after
// them, so a draining processor still sees tenants.
type component struct {
	name   string
	follow bool
	run    func(ctx context.Context) error
}

// process is the state of one Run: what was opened, to be closed in
// reverse.
type process struct {
	r        *Runner
	cfg      *config.Config
	log      *slog.Logger
	prom     *prometheus.Registry
	tracer   trace.TracerProvider
	brokers  []string
	producer *kgo.Client
	reg      *registry.Registry
	writer   *registry.Writer
	ch       driver.Conn
	api      *adminapi.Server
	webhooks *webhooks.Processor // dev and webhooks modes
	xdsMu    sync.Mutex
	xds      *xds.Server // dev and control-plane, once it runs
	handlers map[string]http.HandlerFunc
	comps    []component
	banner   [][2]string                 // what, where
	closers  []func(ctx context.Context) // run in reverse order at the end
	lis      map[string]net.Listener
}

func (p *process) kafka() kafka.Cluster {
	return kafka.Cluster{Config: p.cfg.Kafka, Brokers: p.brokers, Log: p.log, Tracer: p.tracer}
}

func (p *process) add(name string, run func(ctx context.Context) error) {
	p.comps = append(p.comps, component{name: name, run: run})
}

func (p *process) onClose(f func(ctx context.Context)) { p.closers = append(p.closers, f) }

// say adds a "what listens where" line to the banner.
func (p *process) say(what, where string) { p.banner = append(p.banner, [2]string{what, where}) }

// Run starts the mode and runs it until ctx ends or a component fails,
// then shuts down in order. It returns the first component error.
func (r *Runner) Run(ctx context.Context) (err error) {
	p := &process{r: r, cfg: r.cfg, log: r.log, prom: r.opt.Metrics, handlers: map[string]http.HandlerFunc{}, lis: map[string]net.Listener{}}
	defer func() {
		for _, l := range p.lis {
			l.Close() // listeners never handed to a component
		}
		for i := len(p.closers) - 1; i >= 0; i-- {
			cctx, cancel := context.WithTimeout(context.Background(), r.opt.ShutdownTimeout)
			p.closers[i](cctx)
			cancel()
		}
	}()
	if err := p.start(ctx); err != nil {
		return err
	}
	return p.run(ctx)
}

// start builds every component of the mode, in dependency order.
func (p *process) start(ctx context.Context) error {
	mode := p.r.opt.Mode
	if p.prom == nil {
		p.prom = prometheus.NewRegistry()
		for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
			if err := p.prom.Register(c); err != nil {
				return fmt.Errorf("process metrics: %w", err)
			}
		}
	}
	p.tracer = p.r.opt.TracerProvider
	if p.tracer == nil {
		tel, err := telemetry.Setup(ctx, p.cfg.Telemetry.ServiceName, p.prom)
		if err != nil {
			return err
		}
		p.onClose(func(ctx context.Context) { _ = tel.Shutdown(ctx) })
		p.tracer = tel.Tracer
	}
	if err := p.startKafka(ctx, mode == Dev); err != nil {
		return err
	}
	if err := p.startRegistry(); err != nil {
		return err
	}
	if mode == Dev || mode == Attribution {
		if err := p.openClickHouse(ctx, mode == Dev); err != nil {
			return fmt.Errorf("clickhouse: %w", err)
		}
	}
	p.api = adminapi.New(adminapi.Options{
		Token: p.cfg.Admin.Token, Pepper: p.cfg.Partner.Keys.Pepper,
		Registry: p.reg, Writer: p.writer, Limits: p.cfg.Partner.RateLimit,
		Gatherer: p.prom, Log: p.log, Regions: p.cfg.RegionNames(), Features: p.cfg.Partner.Gateway.FeatureNames(),
	})
	for op, h := range p.api.Handlers() {
		p.handlers[op] = h
	}
	p.addChecks()
	if err := p.listen(ListenAdmin, p.cfg.Listeners.Admin); err != nil {
		return err
	}
	if mode == Dev || mode == ControlPlane {
		if err := p.addControlPlane(); err != nil {
			return err
		}
	}
	if mode == Dev || mode == Edge {
		if err := p.addEdge(); err != nil {
			return err
		}
	}
	if mode == Dev || mode == Webhooks {
		if err := p.addWebhooks(); err != nil {
			return err
		}
	}
	if mode == Dev || mode == Attribution {
		if err := p.addAttribution(); err != nil {
			return err
		}
	}
	if routes.Serves(mode, routes.UI) {
		if err := p.addUI(); err != nil {
			return err
		}
	}
	// Exactly the mode's routes; a set whose component is not running has
	// no handlers and fails here (a test per mode checks the rest).
	if err := p.api.Mount(routes.For(mode), p.handlers); err != nil {
		return err
	}
	adminLis := p.take(ListenAdmin)
	p.add("admin-api", func(ctx context.Context) error { return serveHTTP(ctx, adminLis, p.api, p.log) })
	p.bannerHTTP(adminLis.Addr().String())
	return nil
}

func (p *process) startKafka(ctx context.Context, dev bool) error {
	p.brokers = p.cfg.Kafka.Brokers
	if len(p.brokers) == 0 {
		if !dev {
			return errors.New("kafka.brokers is empty: set PARTNERS_KAFKA_BROKERS (only `partners dev` starts the embedded broker)")
		}
		e, err := kafka.StartEmbedded(p.cfg.Kafka.DataDir, p.cfg.Kafka.EmbeddedPort, p.log)
		if err != nil {
			return err
		}
		p.onClose(func(context.Context) { e.Close() })
		p.brokers = e.Addrs()
		p.say(fmt.Sprintf("kafka (embedded kfake, data in %s)", p.cfg.Kafka.DataDir), fmt.Sprint(p.brokers))
	} else {
		p.say("kafka", fmt.Sprint(p.brokers))
	}
	prod, err := p.kafka().NewClient()
	if err != nil {
		return err
	}
	p.producer = prod
	p.onClose(func(ctx context.Context) {
		if err := prod.Flush(ctx); err != nil {
			p.log.Warn("kafka producer not flushed", "err", err)
		}
		prod.Close()
	})
	bctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(bctx, prod, p.cfg.Kafka, p.cfg.Partner.Webhooks); err != nil {
		return fmt.Errorf("kafka topics on %v: %w", p.brokers, err)
	}
	lag, err := kafka.NewLagMonitor(prod, p.kafka().Group(""), 15*time.Second, p.prom, p.log)
	if err != nil {
		return err
	}
	p.add("kafka-lag", lag.Run)
	return nil
}

// startRegistry builds the tenant registry (every mode follows the tenants
// topic: the API keys, the edge, the fan-out and ROI all read it) and its
// writer (used by the tenant routes and the 410 endpoint disable).
func (p *process) startRegistry() error {
	topic := p.kafka().Topic(schemas.TopicTenants)
	keyring, err := p.cfg.Partner.Keys.Keyring()
	if err != nil {
		return err
	}
	reg, err := registry.New(topic, p.log, p.prom, registry.WithSecrets(keyring),
		registry.WithDeadLetters(p.kafka().Topic(schemas.TopicTenantsDLQ), p.producer))
	if err != nil {
		return err
	}
	p.reg = reg
	p.writer = registry.NewWriter(reg, p.producer, registry.WriterOptions{
		Topic:         topic,
		Pepper:        p.cfg.Partner.Keys.Pepper,
		Regions:       p.cfg.RegionNames(),
		Features:      p.cfg.Partner.Gateway.FeatureNames(),
		KeyOverlap:    p.cfg.Partner.Keys.RotationOverlap,
		SecretOverlap: p.cfg.Partner.Webhooks.SecretOverlap,
		Secrets:       keyring,
		Metrics:       p.prom,
	})
	p.onClose(func(context.Context) { p.writer.Close() })
	cl, err := p.kafka().NewClient(registry.ConsumerOpts()...)
	if err != nil {
		return err
	}
	p.onClose(func(context.Context) { cl.Close() })
	p.comps = append(p.comps, component{name: "registry", follow: true, run: func(ctx context.Context) error { return reg.Run(ctx, cl) }})
	return nil
}

// waitRegistry blocks until the registry has read the tenants topic:
// before that every key looks unknown and the fan-out delivers to nobody.
func (p *process) waitRegistry(ctx context.Context) error {
	select {
	case <-p.reg.Ready():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// openClickHouse connects and migrates. Only dev may start a local server
// (clickhouse.auto_start, through Options.StartClickHouse).
func (p *process) openClickHouse(ctx context.Context, dev bool) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := chdb.Open(cctx, p.cfg.ClickHouse)
	if err != nil && dev && p.cfg.ClickHouse.AutoStart && p.r.opt.StartClickHouse != nil {
		p.log.Info("ClickHouse unreachable; starting the local server (clickhouse.auto_start)", "err", err)
		if serr := p.r.opt.StartClickHouse(ctx); serr != nil {
			return fmt.Errorf("start local ClickHouse: %w (after: %v)", serr, err)
		}
		conn, err = chdb.Open(cctx, p.cfg.ClickHouse)
	}
	if err != nil {
		return err
	}
	if _, err := chdb.Migrate(cctx, conn, p.log, chdb.For(p.cfg.ClickHouse)); err != nil {
		conn.Close()
		return err
	}
	p.ch = conn
	p.onClose(func(context.Context) { conn.Close() })
	v, _ := chdb.ServerVersion(ctx, conn)
	p.say("clickhouse "+v, fmt.Sprintf("%v database %s", p.cfg.ClickHouse.Addr, p.cfg.ClickHouse.Database))
	return nil
}

func (p *process) addChecks() {
	p.api.AddCheck("kafka", func(ctx context.Context) error {
		_, err := kadm.NewClient(p.producer).ApiVersions(ctx)
		return err
	})
	p.api.AddCheck("registry", func(context.Context) error {
		select {
		case <-p.reg.Ready():
			return nil
		default:
			return errors.New("loading tenants")
		}
	})
	if p.ch != nil {
		conn := p.ch
		p.api.AddCheck("clickhouse", func(ctx context.Context) error { return conn.Ping(ctx) })
	}
}

// listen binds a listener now, so a port conflict fails the start and Addr
// knows the port of a ":0" address.
func (p *process) listen(name, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s %s: %w", name, addr, err)
	}
	p.lis[name] = l
	p.r.mu.Lock()
	p.r.addrs[name] = l.Addr().String()
	p.r.mu.Unlock()
	return nil
}

// take hands a bound listener to its component, which closes it.
func (p *process) take(name string) net.Listener {
	l := p.lis[name]
	delete(p.lis, name)
	return l
}

func (p *process) bannerHTTP(addr string) {
	var sets []string
	for _, s := range routes.ByMode[p.r.opt.Mode] {
		if s != routes.Ops {
			sets = append(sets, string(s))
		}
	}
	if len(sets) == 0 {
		p.say("ops endpoints", fmt.Sprintf("http://%s (/metrics, /healthz, /readyz)", addr))
		return
	}
	p.say("HTTP API ("+strings.Join(sets, ", ")+")", fmt.Sprintf("http://%s/api/v1 (metrics /metrics, /healthz, /readyz)", addr))
}

// run runs the components until ctx ends or one fails, then stops them:
// the serving ones first (HTTP and gRPC stop taking requests, processors
// drain and commit), the followers after them; each phase is bounded.
func (p *process) run(ctx context.Context) error {
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	followCtx, stopFollowing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFollowing()

	var errMu sync.Mutex
	var first error
	fail := func(name string, err error) {
		if err == nil || errors.Is(err, context.Canceled) {
			return
		}
		errMu.Lock()
		if first == nil {
			first = fmt.Errorf("%s: %w", name, err)
		}
		errMu.Unlock()
		stopServing()
	}
	var serving, following sync.WaitGroup
	running := map[string]bool{}
	var runMu sync.Mutex
	start := func(wg *sync.WaitGroup, c component, cctx context.Context) {
		wg.Add(1)
		runMu.Lock()
		running[c.name] = true
		runMu.Unlock()
		go func() {
			defer wg.Done()
			err := c.run(cctx)
			runMu.Lock()
			delete(running, c.name)
			runMu.Unlock()
			fail(c.name, err)
		}()
	}
	for _, c := range p.comps {
		if c.follow {
			start(&following, c, followCtx)
		} else {
			start(&serving, c, serveCtx)
		}
	}
	p.announce()
	close(p.r.ready)

	<-serveCtx.Done()
	p.log.Info("shutting down: stopping intake, draining and committing")
	stuck := p.wait(&serving, &runMu, running)
	stopFollowing()
	stuck = append(stuck, p.wait(&following, &runMu, running)...)
	errMu.Lock()
	defer errMu.Unlock()
	if len(stuck) > 0 && first == nil {
		first = fmt.Errorf("shutdown: %s did not stop within %v", strings.Join(stuck, ", "), p.r.opt.ShutdownTimeout)
	}
	return first
}

// wait waits for wg at most the shutdown timeout and names what is still
// running after it.
func (p *process) wait(wg *sync.WaitGroup, mu *sync.Mutex, running map[string]bool) []string {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(p.r.opt.ShutdownTimeout):
	}
	mu.Lock()
	defer mu.Unlock()
	var out []string
	for n := range running {
		out = append(out, n)
	}
	return out
}

func (p *process) announce() {
	w := p.r.opt.Banner
	if w == nil {
		for _, l := range p.banner {
			p.log.Info("listening", "what", l[0], "where", l[1])
		}
		return
	}
	width := 0
	for _, l := range p.banner {
		width = max(width, len([]rune(l[0])))
	}
	fmt.Fprintf(w, "partners-engine %s is up:\n", p.r.opt.Mode)
	for _, l := range p.banner {
		fmt.Fprintf(w, "  %s%s  %s\n", l[0], strings.Repeat(" ", width-len([]rune(l[0]))), l[1])
	}
	for _, h := range p.r.opt.Hints {
		fmt.Fprintln(w, h)
	}
}

// newHTTPServer is the admin listener's server: a client that sends its
// headers or body slowly, or holds an idle connection, is cut off.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// serveHTTP serves h on lis until ctx ends, then stops taking requests and
// lets those in flight finish (bounded).
func serveHTTP(ctx context.Context, lis net.Listener, h http.Handler, log *slog.Logger) error {
	srv := newHTTPServer(h, log)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		<-errc
		return err
	}
}
