package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/partners-engine/partners-engine/cmd/partners/internal/demo"
	"github.com/partners-engine/partners-engine/internal/chdb"
)

// demoCmds is `partners demo`.
func (a *app) demoCmds() []*cobra.Command {
	var events, users int
	var settle time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Drive a realistic scenario against a running `partners dev` and print what happened",
		Long: `demo runs against a running system (make run / partners dev): it onboards three
tenants (sandbox, standard, enterprise) whose webhook endpoints are local
receivers (healthy, flaky, rejecting), calls the edge through the ext_authz API
exactly as Envoy does (touchpoints), publishes product events, conversions and
costs, waits until deliveries, retries, the DLQ and ROI settle, and prints
deliveries by outcome, the DLQ, the ROI table per partner and model, and the
trace id of one delivery. It takes about 10 seconds (6 s on a 2-core
machine): the flaky endpoint's retries wait retry.backoff_base_sec (5 s), the
rejecting endpoint answers 422 and is dead-lettered at once.

Every event names its tenant (tenant_id), so only the run's own partners
receive them. The partners stay active afterwards to explore; the next run
suspends them (their receivers end with the run).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			brokers := cfg.Kafka.Brokers
			if len(brokers) == 0 {
				brokers = []string{fmt.Sprintf("127.0.0.1:%d", cfg.Kafka.EmbeddedPort)}
			}
			conn, err := chdb.Open(ctx, cfg.ClickHouse)
			if err != nil {
				return fmt.Errorf("clickhouse (is partners dev running?): %w", err)
			}
			defer conn.Close()
			fmt.Fprintf(a.stdout, "partners demo against admin API %s, edge %s, kafka %v\n", cfg.Admin.URL, cfg.Listeners.ExtAuthz, brokers)
			res, err := demo.Run(ctx, demo.Options{
				Config: cfg, Brokers: brokers, AdminURL: cfg.Admin.URL, AdminToken: cfg.Admin.Token,
				ExtAuthz: cfg.Listeners.ExtAuthz, ClickHouse: conn, Progress: a.stdout,
				Events: events, Users: users, Settle: settle,
			})
			if res != nil {
				res.Print(a.stdout)
			}
			return err
		},
	}
	cmd.Flags().IntVar(&events, "events", 20, "product events to publish")
	cmd.Flags().IntVar(&users, "users", 12, "users calling through partners")
	cmd.Flags().DurationVar(&settle, "settle", 3*time.Minute, "how long to wait for deliveries, DLQ and ROI")
	return []*cobra.Command{cmd}
}
