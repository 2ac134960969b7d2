package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/edge/authz"
)

// addControlPlane adds the xDS control plane: once the registry has read the
// tenants topic it builds every region's snapshot and serves ADS (SotW and
// delta) on listeners.xds, rebuilding regions as tenants change.
func addControlPlane(rt *runtime) error {
	reg := rt.registry()
	lis, err := net.Listen("tcp", rt.cfg.Listeners.XDS)
	if err != nil {
		return fmt.Errorf("control plane: listen %s: %w", rt.cfg.Listeners.XDS, err)
	}
	rt.banner = append(rt.banner, fmt.Sprintf("xDS control plane (ADS SotW+delta)  grpc://%s regions %s", lis.Addr(), strings.Join(rt.cfg.RegionNames(), ", ")))
	rt.add("control-plane", func(ctx context.Context) error {
		if err := rt.waitRegistry(ctx); err != nil {
			lis.Close()
			return err
		}
		srv, err := xds.New(xds.Options{Config: xds.NewConfig(rt.cfg), Tenants: reg, Log: rt.log, Registerer: rt.prom})
		if err != nil {
			lis.Close()
			return err
		}
		return srv.Serve(ctx, lis)
	})
	return nil
}

// addEdge adds the ext_authz edge plugin on listeners.ext_authz. It answers
// only once the registry is loaded: before that every key would look
// unknown (and be remembered as such by the negative cache).
func addEdge(rt *runtime) error {
	reg := rt.registry()
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(rt.cfg), Tenants: reg, Producer: rt.producer, Names: rt.names, Log: rt.log, Registerer: rt.prom})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", rt.cfg.Listeners.ExtAuthz)
	if err != nil {
		return fmt.Errorf("edge: listen %s: %w", rt.cfg.Listeners.ExtAuthz, err)
	}
	rt.banner = append(rt.banner, fmt.Sprintf("edge plugin (ext_authz v3 gRPC)     grpc://%s", lis.Addr()))
	rt.add("edge", func(ctx context.Context) error {
		if err := rt.waitRegistry(ctx); err != nil {
			lis.Close()
			return err
		}
		return srv.Serve(ctx, lis)
	})
	return nil
}

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
			cfg, err := a.load()
			if err != nil {
				return err
			}
			if !slices.Contains(cfg.RegionNames(), region) {
				return &exitError{code: 2, err: fmt.Errorf("unknown region %q (configured: %s)", region, strings.Join(cfg.RegionNames(), ", "))}
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
