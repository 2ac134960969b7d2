package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/control-plane/xds"
)

// edgeToolCmds are the operators' xDS commands.
func (a *app) edgeToolCmds() []*cobra.Command {
	cmd := &cobra.Command{Use: "xds", Short: "Inspect what the xDS control plane serves to the Envoy edges"}
	var region, server string
	dump := &cobra.Command{
		Use:   "dump --region R",
		Short: "Print a region's current xDS resources as YAML",
		Long: `dump asks the running control plane (listeners.xds, or --server) for a region's
resources exactly as an Envoy of that region receives them: it opens a delta
ADS stream as a node whose cluster is the region, subscribes to clusters,
secrets, listeners and routes, ACKs them and prints them as YAML with each
type's version. Nothing is built locally, so the output is what Envoy gets.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadClient()
			if err != nil {
				return err
			}
			if !slices.Contains(cfg.RegionNames(), region) {
				return &exitError{code: exitUsage, err: fmt.Errorf("unknown region %q (configured: %s)", region, strings.Join(cfg.RegionNames(), ", "))}
			}
			if server == "" {
				server = cfg.Listeners.XDS
			}
			conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), xds.FetchTimeout)
			defer cancel()
			f, err := xds.Fetch(ctx, conn, region, "partners-xds-dump")
			if err != nil {
				return fmt.Errorf("control plane at %s: %w (is `partners control-plane` or `partners dev` running?)", server, err)
			}
			out, err := f.YAML()
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(out)
			return err
		},
	}
	dump.Flags().StringVar(&region, "region", "", "region to dump (one of the configured regions)")
	dump.Flags().StringVar(&server, "server", "", "control plane address (default listeners.xds)")
	_ = dump.MarkFlagRequired("region")
	cmd.AddCommand(dump)
	return []*cobra.Command{cmd}
}
