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
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	shipped "github.com/partners-engine/partners-engine/config"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/telemetry"
)

// app is what every subcommand shares: the config path and output streams.
type app struct {
	configPath string
	logLevel   string
	stdout     io.Writer
	stderr     io.Writer
	// configSet: --config was given; running: a command's RunE started
	// (an error before it is a usage error: flags, arguments, commands).
	configSet bool
	running   bool
	// foundIn is the checkout whose config/ findConfig found by searching
	// (a parent directory, beside the binary); "" otherwise.
	foundIn string
}

// Exit codes (documented in `partners --help`).
const (
	exitFailure = 1 // the operation failed: unreachable, 5xx, timeout, interrupted
	exitUsage   = 2 // bad command line, config or input (also when the API answers 400, 413, 415, 422)
	exitRefused = 3 // the API refused: 401, 403 (token), 404 (no such thing), 409, 412 (conflict)
)

const exitCodesHelp = `Exit codes:
  0  success
  1  the operation failed: the API or broker is unreachable, a 5xx answer, a
     timeout, an interrupt
  2  usage: an unknown command or flag, a bad flag value or argument, an
     invalid configuration or input (--data, --type), or an API answer of
     400, 413, 415 or 422 (the server refused the input)
  3  refused: an API answer of 401 or 403 (the admin token), 404 (no such
     tenant or endpoint), 409 or 412 (a concurrent change: read and retry)`

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
	go func() { // a second Ctrl-C ends the process at once
		<-ctx.Done()
		stop()
	}()
	root := a.rootCmd()
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "partners:", err)
		os.Exit(a.exitCode(err))
	}
}

// exitCode is the code main exits with for err: an exitError's, a usage
// error's (anything cobra refused before a command ran), else failure.
func (a *app) exitCode(err error) int {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case !a.running:
		return exitUsage
	default:
		return exitFailure
	}
}

// markRunning wraps every command's RunE so that exitCode can tell usage
// errors (flags, arguments, unknown commands: before RunE) from failures.
func (a *app) markRunning(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			a.running = true
			return run(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		a.markRunning(sub)
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
  partners tenants create --name Acme --tier sandbox --webhook-url http://127.0.0.1:9999/hook

Configuration: --config FILE, else $PARTNERS_CONFIG, else config/partners-engine.yaml
in this directory or the nearest parent that has one, else next to the binary
(../config/). Without a file the client commands (tenants, dlq, roi, events,
demo, xds) use the configuration built into the binary, which reads the admin
API from PARTNERS_ADMIN_URL and PARTNERS_ADMIN_TOKEN; the processes refuse to
start without one.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			a.configSet = cmd.Flags().Changed("config")
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: fmt.Errorf("%w (see `%s --help`)", err, cmd.CommandPath())}
	})
	root.PersistentFlags().StringVar(&a.configPath, "config", config.DefaultPath, "configuration file (YAML, ${env:NAME:-default} placeholders); see Configuration above")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "", "override telemetry.log_level (debug|info|warn|error)")
	root.AddCommand(
		a.devCmd(),
		a.migrateCmd(),
		a.configCmd(),
		a.tenantsCmd(),
	)
	root.AddCommand(a.componentCmds()...)
	root.AddCommand(a.toolCmds()...)
	a.markRunning(root)
	return root
}

// findConfig is the configuration file a command reads: --config, else
// $PARTNERS_CONFIG, else config/partners-engine.yaml in the working
// directory or its nearest parent holding one, else beside the binary
// (bin/partners → ../config). "" when there is none.
func (a *app) findConfig() string {
	if a.configSet {
		return a.configPath
	}
	if p := os.Getenv("PARTNERS_CONFIG"); p != "" {
		return p
	}
	var dirs []string
	wd, wdErr := os.Getwd()
	if wdErr == nil {
		for d := wd; ; d = filepath.Dir(d) {
			dirs = append(dirs, d)
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(filepath.Dir(exe)))
	}
	for _, d := range dirs {
		p := filepath.Join(d, config.DefaultPath)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			if wdErr == nil && d == wd {
				return config.DefaultPath
			}
			a.foundIn = d
			return p
		}
	}
	return ""
}

// load reads and validates the configuration of a process (dev, the
// components, migrate, config check): a file is required.
func (a *app) load() (*config.Config, error) {
	path := a.findConfig()
	if path == "" {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("no configuration: %s is neither here nor in a parent directory nor beside the binary; pass --config FILE or set PARTNERS_CONFIG", config.DefaultPath)}
	}
	a.configPath = path
	cfg, err := config.Load(path)
	return a.finish(cfg, err)
}

// loadClient is load for the client commands (tenants, dlq, roi, events,
// demo, xds): without a file they use the configuration built into the
// binary (admin API from PARTNERS_ADMIN_URL / PARTNERS_ADMIN_TOKEN).
func (a *app) loadClient() (*config.Config, error) {
	path := a.findConfig()
	if path != "" {
		a.configPath = path
		cfg, err := config.Load(path)
		return a.finish(cfg, err)
	}
	a.configPath = "(built-in configuration)"
	cfg, err := config.Parse(shipped.Shipped, os.LookupEnv)
	if err != nil {
		err = fmt.Errorf("built-in configuration: %w", err)
	}
	return a.finish(cfg, err)
}

func (a *app) finish(cfg *config.Config, err error) (*config.Config, error) {
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	if a.logLevel != "" {
		cfg.Telemetry.LogLevel = a.logLevel
		if err := cfg.Validate(); err != nil {
			return nil, &exitError{code: exitUsage, err: err}
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
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("partners %s refuses values only `partners dev` accepts: %w", name, err)}
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
					return &exitError{code: exitUsage, err: fmt.Errorf("--for: want dev, production or one of %s, got %q", strings.Join(components, ", "), mode)}
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
			return &exitError{code: exitUsage, err: fmt.Errorf("%s: not valid for %s (only `partners dev` accepts these):\n  %s", a.configPath, mode, strings.Join(problems, "\n  "))}
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
