package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/partners-engine/partners-engine/internal/config"
)

// componentCmds are the one-component subcommands. Each runs the shared
// runtime (Kafka from kafka.brokers, the registry) plus its component.
func (a *app) componentCmds() []*cobra.Command {
	return []*cobra.Command{
		a.componentCmd("control-plane", "Run the xDS control plane and the admin API", false, addControlPlane, true),
		a.componentCmd("edge", "Run the ext_authz edge plugin for Envoy", false, addEdge, false),
		a.componentCmd("webhooks", "Run the webhooks processor (fan-out, retries, DLQ)", false, addWebhooks, false),
		a.componentCmd("attribution", "Run the attribution processor (Kafka → ClickHouse)", true, addAttribution, false),
	}
}

// toolCmds are the operator and analyst commands of the components.
func (a *app) toolCmds() []*cobra.Command {
	var out []*cobra.Command
	out = append(out, a.edgeToolCmds()...)
	out = append(out, a.webhookToolCmds()...)
	out = append(out, a.attributionToolCmds()...)
	out = append(out, a.demoCmds()...)
	return out
}

func (a *app) componentCmd(name, short string, clickhouse bool, add func(*runtime) error, admin bool) *cobra.Command {
	return &cobra.Command{
		Use:   name,
		Short: short,
		Long: short + `.

Kafka brokers come from kafka.brokers (PARTNERS_KAFKA_BROKERS); use
'partners dev' to run everything on the embedded broker.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			rt, err := a.start(ctx, name, clickhouse)
			if err != nil {
				return err
			}
			if admin {
				rt.adminAPI()
			}
			if err := add(rt); err != nil {
				rt.close()
				return err
			}
			if rt.admin == nil { // every process is probed and scraped
				rt.opsAPI()
			}
			for _, l := range rt.banner {
				rt.log.Info("listening", "what", l)
			}
			return rt.run(ctx)
		},
	}
}

// start loads the configuration for mode and builds the shared runtime:
// Kafka (the embedded broker only in dev with no brokers configured) and,
// with clickhouse, the migrated ClickHouse connection. Every mode except
// dev refuses development values.
func (a *app) start(ctx context.Context, mode string, clickhouse bool) (*runtime, error) {
	load := a.load
	if mode != "dev" {
		load = func() (*config.Config, error) { return a.loadComponent(mode) }
	}
	cfg, err := load()
	if err != nil {
		return nil, err
	}
	rt, err := newRuntime(ctx, cfg, a.logger(cfg), mode == "dev")
	if err != nil {
		return nil, err
	}
	if clickhouse {
		if _, err := rt.clickhouse(ctx); err != nil {
			rt.close()
			return nil, fmt.Errorf("clickhouse: %w", err)
		}
	}
	return rt, nil
}
