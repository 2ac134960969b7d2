package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/spf13/cobra"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/runner"
	"github.com/partners-engine/partners-engine/internal/runner/routes"
)

// The process modes: flags → runner.Options → runner.Run. What each mode
// runs and serves is internal/runner (routes in internal/runner/routes).

func (a *app) devCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "Run every component in one process (embedded Kafka unless brokers are configured)",
		Long: `dev runs the whole system in one process: the embedded kfake broker (state in
kafka.data_dir, so tenants survive a restart) unless kafka.brokers is set, the
local ClickHouse (started through deploy/local/clickhouse.sh if unreachable
and clickhouse.auto_start is set), migrations, the tenant registry, the HTTP
API with every route set, the xDS control plane, the ext_authz edge plugin,
and the webhooks and attribution processors. It is the only mode that
accepts the development admin token and pepper.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runMode(cmd.Context(), runner.Dev) },
	}
}

// componentCmds are the one-component subcommands.
func (a *app) componentCmds() []*cobra.Command {
	return []*cobra.Command{
		a.componentCmd(runner.ControlPlane, "Run the xDS control plane and the tenant admin API"),
		a.componentCmd(runner.Edge, "Run the ext_authz edge plugin for Envoy"),
		a.componentCmd(runner.Webhooks, "Run the webhooks processor (fan-out, retries, DLQ, delivery log)"),
		a.componentCmd(runner.Attribution, "Run the attribution processor (Kafka → ClickHouse) and the ROI API"),
	}
}

func (a *app) componentCmd(mode runner.Mode, short string) *cobra.Command {
	var served string
	for _, r := range routes.For(mode) {
		served += "\n  " + r.Pattern
	}
	return &cobra.Command{
		Use:   string(mode),
		Short: short,
		Long: short + `.

Kafka brokers come from kafka.brokers (PARTNERS_KAFKA_BROKERS); use
'partners dev' to run everything on the embedded broker. Development secrets
(the shipped admin token and pepper, REPLACE_ME placeholders) are refused.
HTTP routes served on listeners.admin:` + served,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runMode(cmd.Context(), mode) },
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

// runMode loads the configuration for mode and runs it until the signal
// context ends.
func (a *app) runMode(ctx context.Context, mode runner.Mode) error {
	var cfg *config.Config
	var err error
	if mode == runner.Dev {
		cfg, err = a.load()
		if err == nil && a.foundIn != "" {
			// dev's relative paths (kafka.data_dir, deploy/local) are the checkout's
			if err := os.Chdir(a.foundIn); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "partners dev: using the checkout %s (%s)\n", a.foundIn, config.DefaultPath)
		}
	} else {
		cfg, err = a.loadComponent(string(mode))
	}
	if err != nil {
		return err
	}
	opt := runner.Options{Mode: mode, Config: cfg, Log: a.logger(cfg)}
	if mode == runner.Dev {
		opt.Banner = a.stdout
		opt.Hints = []string{
			"Try, in another shell:",
			"  bin/partners tenants create --name Acme --tier sandbox --webhook-url http://127.0.0.1:9999/hook",
			"  bin/partners tenants list",
			"  bin/partners demo        # a whole scenario: partners, webhooks, DLQ, ROI, a trace id",
			"Stop with Ctrl-C.",
		}
		opt.StartClickHouse = startLocalClickHouse
	}
	r, err := runner.New(opt)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	err = r.Run(ctx)
	if mode == runner.Dev && ctx.Err() != nil {
		// Ctrl-C: say what stopped and what did not.
		fmt.Fprintln(a.stdout, "\npartners dev stopped (tenants and events are kept in kafka.data_dir).")
		fmt.Fprintln(a.stdout, "ClickHouse, Redis and the rate-limit service keep running for the next start; `make stack-down` stops them.")
		if err == nil || errors.Is(err, context.Canceled) {
			return nil
		}
	}
	return err
}

// startLocalClickHouse is dev's clickhouse.auto_start: the local stack script.
func startLocalClickHouse(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "bash", "deploy/local/clickhouse.sh", "start")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("deploy/local/clickhouse.sh start: %w", err)
	}
	return nil
}
