package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/control-plane/adminapi"
	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/telemetry"
	"github.com/partners-engine/partners-engine/schemas"
)

// runtime holds what the components of one process share: configuration,
// logger, metrics registry, Kafka (embedded or configured), the tenant
// registry, the admin API and, on demand, ClickHouse. Components are added
// with add and run together under one context; the first to fail stops all.
type runtime struct {
	cfg   *config.Config
	log   *slog.Logger
	prom  *prometheus.Registry
	names kafka.Names
	tel   *telemetry.Providers

	embedded *kafka.Embedded
	brokers  []string
	producer *kgo.Client // shared producer (no consumer group)

	reg    *registry.Registry
	writer *registry.Writer
	admin  *adminapi.Server

	chOnce sync.Once
	ch     driver.Conn
	chErr  error

	comps  []component
	banner []string // "what listens where" lines printed by dev
}

// component is one long-running part of the process.
type component struct {
	name string
	run  func(ctx context.Context) error
}

func (rt *runtime) add(name string, run func(ctx context.Context) error) {
	rt.comps = append(rt.comps, component{name: name, run: run})
}

// newRuntime sets up telemetry and Kafka. embedded allows starting the kfake
// broker when no brokers are configured (partners dev); otherwise brokers
// are required.
func newRuntime(ctx context.Context, cfg *config.Config, log *slog.Logger, embedded bool) (*runtime, error) {
	rt := &runtime{cfg: cfg, log: log, prom: prometheus.NewRegistry(), names: kafka.Names{Prefix: cfg.Kafka.TopicPrefix}}
	rt.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tel, err := telemetry.Setup(ctx, cfg.Telemetry.ServiceName, rt.prom)
	if err != nil {
		return nil, err
	}
	rt.tel = tel
	rt.brokers = cfg.Kafka.Brokers
	if len(rt.brokers) == 0 {
		if !embedded {
			return nil, errors.New("kafka.brokers is empty: set PARTNERS_KAFKA_BROKERS (only `partners dev` starts the embedded broker)")
		}
		e, err := kafka.StartEmbedded(cfg.Kafka.DataDir, cfg.Kafka.EmbeddedPort, log)
		if err != nil {
			return nil, err
		}
		rt.embedded = e
		rt.brokers = e.Addrs()
		rt.banner = append(rt.banner, fmt.Sprintf("kafka (embedded kfake, data in %s)  %v", cfg.Kafka.DataDir, rt.brokers))
	} else {
		rt.banner = append(rt.banner, fmt.Sprintf("kafka                               %v", rt.brokers))
	}
	rt.producer, err = rt.kafka().NewClient()
	if err != nil {
		rt.close()
		return nil, err
	}
	lag, err := kafka.NewLagMonitor(rt.producer, rt.names.Group(cfg.Kafka.GroupPrefix, ""), 15*time.Second, rt.prom, log)
	if err != nil {
		rt.close()
		return nil, err
	}
	rt.add("kafka-lag", lag.Run)
	bctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(bctx, rt.producer, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		rt.close()
		return nil, fmt.Errorf("kafka topics on %v: %w", rt.brokers, err)
	}
	if err := rt.startRegistry(); err != nil {
		rt.close()
		return nil, err
	}
	return rt, nil
}

// kafka is how the components reach the brokers.
func (rt *runtime) kafka() kafka.Cluster {
	return kafka.Cluster{Config: rt.cfg.Kafka, Brokers: rt.brokers, Log: rt.log}
}

// registry returns the shared tenant registry (every mode follows it).
func (rt *runtime) registry() *registry.Registry { return rt.reg }

// startRegistry builds the registry and its writer and adds its follower.
func (rt *runtime) startRegistry() error {
	reg, err := registry.New(rt.names.Topic(schemas.TopicTenants), rt.log, rt.prom)
	if err != nil {
		return err
	}
	rt.reg = reg
	rt.writer = registry.NewWriter(rt.reg, rt.producer, registry.WriterOptions{
		Topic:         rt.names.Topic(schemas.TopicTenants),
		Pepper:        rt.cfg.Partner.Keys.Pepper,
		Regions:       rt.cfg.RegionNames(),
		KeyOverlap:    rt.cfg.Partner.Keys.RotationOverlap,
		SecretOverlap: rt.cfg.Partner.Webhooks.SecretOverlap,
	})
	rt.add("registry", func(ctx context.Context) error {
		cl, err := rt.kafka().NewClient()
		if err != nil {
			return err
		}
		defer cl.Close()
		return rt.reg.Run(ctx, cl)
	})
	return nil
}

// waitRegistry blocks until the registry has read the tenants topic.
func (rt *runtime) waitRegistry(ctx context.Context) error {
	select {
	case <-rt.registry().Ready():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// clickhouse returns the shared ClickHouse connection, starting the local
// server through deploy/local/clickhouse.sh when clickhouse.auto_start is set
// and it is unreachable, and applying migrations.
func (rt *runtime) clickhouse(ctx context.Context) (driver.Conn, error) {
	rt.chOnce.Do(func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		conn, err := chdb.Open(cctx, rt.cfg.ClickHouse)
		if err != nil && rt.cfg.ClickHouse.AutoStart {
			rt.log.Info("ClickHouse unreachable; starting the local server", "script", "deploy/local/clickhouse.sh", "err", err)
			cmd := exec.CommandContext(ctx, "bash", "deploy/local/clickhouse.sh", "start")
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if serr := cmd.Run(); serr != nil {
				rt.chErr = fmt.Errorf("start local ClickHouse: %w (after: %v)", serr, err)
				return
			}
			conn, err = chdb.Open(cctx, rt.cfg.ClickHouse)
		}
		if err != nil {
			rt.chErr = err
			return
		}
		if _, err := chdb.Migrate(cctx, conn, rt.log); err != nil {
			conn.Close()
			rt.chErr = err
			return
		}
		rt.ch = conn
		v, _ := chdb.ServerVersion(ctx, conn)
		rt.banner = append(rt.banner, fmt.Sprintf("clickhouse %-24s %v database %s", v, rt.cfg.ClickHouse.Addr, rt.cfg.ClickHouse.Database))
	})
	return rt.ch, rt.chErr
}

// adminAPI returns the admin API server, serving on listeners.admin.
func (rt *runtime) adminAPI() *adminapi.Server { return rt.httpAPI(false) }

// opsAPI serves only /healthz, /readyz and /metrics on listeners.admin, for
// a process that owns no API routes (the edge plugin) but must be probed and
// scraped. Its readiness includes the tenant registry.
func (rt *runtime) opsAPI() *adminapi.Server { return rt.httpAPI(true) }

func (rt *runtime) httpAPI(opsOnly bool) *adminapi.Server {
	if rt.admin != nil {
		return rt.admin
	}
	reg := rt.registry()
	rt.admin = adminapi.New(adminapi.Options{
		Token: rt.cfg.Admin.Token, Pepper: rt.cfg.Partner.Keys.Pepper,
		Registry: reg, Writer: rt.writer, Limits: rt.cfg.Partner.RateLimit,
		Gatherer: rt.prom, Log: rt.log, OpsOnly: opsOnly,
	})
	rt.admin.AddCheck("kafka", func(ctx context.Context) error {
		_, err := kadm.NewClient(rt.producer).ApiVersions(ctx)
		return err
	})
	rt.admin.AddCheck("registry", func(context.Context) error {
		select {
		case <-reg.Ready():
			return nil
		default:
			return errors.New("loading tenants")
		}
	})
	if rt.ch != nil {
		rt.admin.AddCheck("clickhouse", func(ctx context.Context) error { return rt.ch.Ping(ctx) })
	}
	if opsOnly {
		rt.banner = append(rt.banner, fmt.Sprintf("ops endpoints                       http://%s (/metrics, /healthz, /readyz)", rt.cfg.Listeners.Admin))
	} else {
		rt.banner = append(rt.banner, fmt.Sprintf("admin API                           http://%s/api/v1 (metrics /metrics, /healthz, /readyz)", rt.cfg.Listeners.Admin))
	}
	rt.add("admin-api", func(ctx context.Context) error {
		return serveHTTP(ctx, rt.cfg.Listeners.Admin, rt.admin, rt.log)
	})
	return rt.admin
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// run runs every component until ctx ends or one fails, then shuts down in
// order: components first (they drain and commit), then clients.
func (rt *runtime) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range rt.comps {
		g.Go(func() error {
			err := c.run(gctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			return nil
		})
	}
	err := g.Wait()
	rt.close()
	return err
}

func (rt *runtime) close() {
	if rt.producer != nil {
		fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = rt.producer.Flush(fctx)
		cancel()
		rt.producer.Close()
	}
	if rt.ch != nil {
		rt.ch.Close()
	}
	if rt.embedded != nil {
		rt.embedded.Close()
	}
	if rt.tel != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = rt.tel.Shutdown(sctx)
		cancel()
	}
}
