package runner

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/processors/webhooks"
	"github.com/partners-engine/partners-engine/schemas"
)

// Each add* builds one component from its own configuration sections and
// adds what it runs; handlers it owns go into p.handlers by operationId,
// where Mount finds the ones the mode serves.

// addControlPlane: build every region's snapshot from the configuration and
// serve ADS (SotW and delta) on listeners.xds to the Envoys and the
// rate-limit services. No xDS resource names a tenant: it needs no registry
// and a tenant change pushes nothing.
func (p *process) addControlPlane() error {
	srv, err := xds.New(xds.Options{Config: xds.NewConfig(p.cfg), Log: p.log, Registerer: p.prom})
	if err != nil {
		return err
	}
	p.xdsMu.Lock()
	p.xds = srv // the UI's health page shows its versions
	p.xdsMu.Unlock()
	if err := p.listen(ListenXDS, p.cfg.Listeners.XDS); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	lis := p.take(ListenXDS)
	p.say("xDS control plane (ADS SotW+delta)", fmt.Sprintf("grpc://%s regions %s", lis.Addr(), strings.Join(p.cfg.RegionNames(), ", ")))
	p.add("control-plane", func(ctx context.Context) error {
		defer lis.Close()
		return srv.Serve(ctx, lis)
	})
	return nil
}

// addEdge: the ext_authz plugin on listeners.ext_authz. It answers only
// once the registry is loaded: before that every key would look unknown
// (and be remembered as such by the negative cache).
func (p *process) addEdge() error {
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(p.cfg), Tenants: p.reg, Producer: p.producer,
		Names: p.kafka().Names(), Log: p.log, Registerer: p.prom, TracerProvider: p.tracer})
	if err != nil {
		return err
	}
	if err := p.listen(ListenExtAuthz, p.cfg.Listeners.ExtAuthz); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	lis := p.take(ListenExtAuthz)
	p.say("edge plugin (ext_authz v3 gRPC)", fmt.Sprintf("grpc://%s", lis.Addr()))
	p.add("edge", func(ctx context.Context) error {
		if err := p.waitRegistry(ctx); err != nil {
			lis.Close()
			return err
		}
		return srv.Serve(ctx, lis)
	})
	return nil
}

// addWebhooks: the webhooks processor (first attempts, one stage per retry
// topic, the FIFO stage, the DLQ index), the delivery-log sink into ClickHouse, and the DLQ and
// webhook-test handlers.
func (p *process) addWebhooks() error {
	wp, err := webhooks.New(webhooks.Options{
		Config: p.cfg.Partner.Webhooks, Kafka: p.kafka(), Tenants: p.reg, Disabler: p.writer,
		Log: p.log, Metrics: p.prom, TracerProvider: p.tracer,
	})
	if err != nil {
		return err
	}
	p.webhooks = wp
	api := &webhooks.API{P: wp}
	p.handlers["listDLQ"] = api.List
	p.handlers["replayDLQ"] = api.Replay
	p.handlers["recoverEndpoint"] = api.Recover
	p.handlers["testWebhook"] = api.Test
	p.say("webhooks processor", p.kafka().Topic(schemas.TopicEvents)+" → signed webhooks, retries, DLQ, delivery log")
	p.add("webhooks", func(ctx context.Context) error {
		defer wp.Close()
		if err := p.waitRegistry(ctx); err != nil {
			return err
		}
		return wp.Run(ctx)
	})
	p.add("delivery-log", func(ctx context.Context) error {
		conn := p.ch
		for conn == nil {
			// The log waits on its topic: ClickHouse being down delays the
			// table, never the deliveries.
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			c, err := chdb.Open(cctx, p.cfg.ClickHouse)
			if err == nil {
				if _, err = chdb.Migrate(cctx, c, p.log, chdb.For(p.cfg.ClickHouse)); err != nil {
					c.Close()
				} else {
					conn = c
					defer c.Close()
				}
			}
			cancel()
			if conn != nil {
				break
			}
			p.log.Warn("delivery log: ClickHouse unavailable; retrying in 10s", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Second):
			}
		}
		return webhooks.RunDeliveryLog(ctx, webhooks.DeliveryLogOptions{Kafka: p.kafka(), Conn: conn, Config: p.cfg.Partner.Webhooks, Log: p.log})
	})
	return nil
}

// addAttribution: the attribution processor (Kafka → ClickHouse) and the
// ROI handler.
func (p *process) addAttribution() error {
	ap, err := attribution.New(attribution.Options{
		Config: p.cfg.Partner.Attribution, Kafka: p.kafka(), Conn: p.ch, Producer: p.producer,
		Log: p.log.With("component", "attribution"), Metrics: p.prom,
	})
	if err != nil {
		return err
	}
	p.handlers["getROI"] = roi.Handler(roi.HandlerOptions{
		Conn: p.ch, DefaultWindow: p.cfg.Partner.Attribution.ROIWindowDays(),
		TenantName: p.reg.Get, Log: p.log.With("component", "roi"),
	})
	p.say("attribution processor", "touchpoints, conversions, costs → ClickHouse (ROI at /api/v1/analytics/roi)")
	p.add("attribution", ap.Run)
	return nil
}
