// Command partners is the one binary of partners-engine. Commands parse
// flags, load the configuration (internal/config) and call one package:
// `dev`, `control-plane`, `edge`, `webhooks` and `attribution` (run.go) hand
// their mode to internal/runner, which runs the mode's components and
// serves its routes; the operator and analyst commands (tenants.go,
// webhooks.go, attribution.go, edge.go) call the admin API through its
// generated client or Kafka; `demo` drives internal/demo. See
// `partners --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/telemetry"
)

// app is what every subcommand shares: the config path and output streams.
type app struct {
	configPath string
	logLevel   string
	stdout     io.Writer
	stderr     io.Writer
}

// exitError carries an exit code for main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	root := a.rootCmd()
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "partners:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "partners",
		Short: "partners-engine: partner edge, signed webhooks and real-time partner ROI",
		Long: `partners-engine runs the partner platform: an xDS control plane and ext_authz
edge plugin for regional Envoy edges, Kafka-fed webhook fan-out with retries,
DLQ and replay, and attribution into ClickHouse with partner ROI.

Start everything locally with 'partners dev' (make run), then try:
  partners tenants create --name Acme --tier sandbox --webhook-url http://127.0.0.1:9999/hook`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", config.DefaultPath, "configuration file (YAML, ${env:NAME:-default} placeholders)")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "", "override telemetry.log_level (debug|info|warn|error)")
	root.AddCommand(
		a.devCmd(),
		a.migrateCmd(),
		a.configCmd(),
		a.tenantsCmd(),
	)
	root.AddCommand(a.componentCmds()...)
	root.AddCommand(a.toolCmds()...)
	return root
}

// load reads and validates the configuration.
func (a *app) load() (*config.Config, error) {
	cfg, err := config.Load(a.configPath)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	if a.logLevel != "" {
		cfg.Telemetry.LogLevel = a.logLevel
		if err := cfg.Validate(); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
	}
	return cfg, nil
}

// logger builds the process logger. slog.SetDefault happens only here.
func (a *app) logger(cfg *config.Config) *slog.Logger {
	log := telemetry.NewLogger(a.stderr, cfg.Telemetry.LogLevel, cfg.Telemetry.LogFormat)
	slog.SetDefault(log)
	return log
}

// components are the processes that refuse development values (the public
// dev admin token and pepper, REPLACE_ME placeholders): every one except dev.
var components = []string{"control-plane", "edge", "webhooks", "attribution"}

// loadComponent is load for a component process: it refuses what only
// `partners dev` may run with.
func (a *app) loadComponent(name string) (*config.Config, error) {
	cfg, err := a.load()
	if err != nil {
		return nil, err
	}
	if err := cfg.DevOnly(); err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("partners %s refuses values only `partners dev` accepts: %w", name, err)}
	}
	return cfg, nil
}

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	var mode string
	check := &cobra.Command{
		Use:   "check [--for dev|production|control-plane|edge|webhooks|attribution]",
		Short: "Validate the configuration strictly; errors name the key path and the value",
		Long: `check runs the validation the processes run. Without --for it says whether the
configuration is valid for 'partners dev' and, separately, whether the
production components (control-plane, edge, webhooks, attribution) would run
it: they refuse the public development admin token and pepper and
REPLACE_ME-style placeholders, which only 'partners dev' accepts. It exits 2
when the configuration is invalid for dev. With --for production (or a
component name) it exits 2 unless that process would run it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch mode {
			case "", "dev", "production":
			default:
				if !slices.Contains(components, mode) {
					return &exitError{code: 2, err: fmt.Errorf("--for: want dev, production or one of %s, got %q", strings.Join(components, ", "), mode)}
				}
			}
			cfg, err := a.load()
			if err != nil {
				return err
			}
			kafka := "embedded broker"
			if len(cfg.Kafka.Brokers) > 0 {
				kafka = fmt.Sprint(cfg.Kafka.Brokers)
			}
			summary := fmt.Sprintf("(kafka: %s, clickhouse: %v/%s, regions: %v)", kafka, cfg.ClickHouse.Addr, cfg.ClickHouse.Database, cfg.RegionNames())
			devOnly := cfg.DevOnly()
			if mode == "dev" {
				fmt.Fprintf(a.stdout, "%s: valid for `partners dev` %s\n", a.configPath, summary)
				return nil
			}
			if devOnly == nil {
				fmt.Fprintf(a.stdout, "%s: valid for `partners dev` and every component (%s) %s\n", a.configPath, strings.Join(components, ", "), summary)
				return nil
			}
			var ve *config.ValidationError
			problems := []string{devOnly.Error()}
			if errors.As(devOnly, &ve) {
				problems = ve.Problems
			}
			if mode == "" {
				fmt.Fprintf(a.stdout, "%s: valid for `partners dev` only %s\n", a.configPath, summary)
				fmt.Fprintf(a.stdout, "NOT valid for production: the components (%s) refuse it:\n", strings.Join(components, ", "))
				for _, p := range problems {
					fmt.Fprintln(a.stdout, "  "+p)
				}
				fmt.Fprintln(a.stdout, "(`partners config check --for production` exits 2 on this)")
				return nil
			}
			return &exitError{code: 2, err: fmt.Errorf("%s: not valid for %s (only `partners dev` accepts these):\n  %s", a.configPath, mode, strings.Join(problems, "\n  "))}
		},
	}
	check.Flags().StringVar(&mode, "for", "", "the process to check for: dev, production, or a component name")
	cmd.AddCommand(check)
	return cmd
}

func (a *app) migrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse migrations (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.load()
			if err != nil {
				return err
			}
			return a.migrate(cmd.Context(), cfg)
		},
	}
}
