package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/partners-engine/partners-engine/control-plane/adminclient"
	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
)

// api returns the generated admin API client, authenticated with the admin token.
func (a *app) api(cfg *config.Config) (*adminclient.ClientWithResponses, error) {
	return adminclient.NewClientWithResponses(cfg.Admin.URL,
		adminclient.WithHTTPClient(&http.Client{Timeout: 30 * time.Second}),
		adminclient.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			req.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
			return nil
		}))
}

// client loads the configuration and returns it with the admin API client.
func (a *app) client() (*config.Config, *adminclient.ClientWithResponses, error) {
	cfg, err := a.loadClient()
	if err != nil {
		return nil, nil, err
	}
	c, err := a.api(cfg)
	return cfg, c, err
}

// apiResult prints a successful JSON body (indented) or turns a problem into
// an error naming the status and detail.
func (a *app) apiResult(status int, body []byte, err error, want int) error {
	if err != nil {
		return &exitError{code: exitFailure, err: fmt.Errorf("admin API unreachable (is `make run` / `partners dev` up?): %w", err)}
	}
	if status != want {
		code := statusExit(status)
		var p struct {
			Title, Detail, Field string
		}
		if json.Unmarshal(body, &p) == nil && p.Title != "" {
			return &exitError{code: code, err: fmt.Errorf("%d %s: %s", status, p.Title, p.Detail)}
		}
		return &exitError{code: code, err: fmt.Errorf("unexpected status %d: %s", status, bytes.TrimSpace(body))}
	}
	var out bytes.Buffer
	if json.Indent(&out, body, "", "  ") != nil {
		out.Write(body)
	}
	fmt.Fprintln(a.stdout, strings.TrimSpace(out.String()))
	return nil
}

// statusExit is the exit code of an API answer that is not the expected one
// (the convention in `partners --help`).
func statusExit(status int) int {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity:
		return exitUsage
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusConflict, http.StatusPreconditionFailed, http.StatusPreconditionRequired:
		return exitRefused
	default:
		return exitFailure
	}
}

func (a *app) tenantsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "Onboard and manage partners through the admin API",
		Long: `tenants calls the admin API (admin.url, with admin.token). The API key and
webhook secret are printed once, by create, rotate-key and rotate-secret.`,
	}
	var (
		name, tier, url, region, events, status string
	)
	create := &cobra.Command{
		Use:   "create --name N --tier T --webhook-url U [--events a,b] [--region R]",
		Short: "Onboard a partner; prints JSON with id, api_key (shown once) and webhook_secret",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := a.client()
			if err != nil {
				return err
			}
			body := adminclient.CreateTenant{Name: name, Tier: adminclient.CreateTenantTier(tier), WebhookUrl: url}
			if events != "" {
				ev := splitList(events)
				body.Events = &ev
			}
			if region != "" {
				var rs []adminclient.Region
				for _, r := range splitList(region) {
					rs = append(rs, adminclient.Region(r))
				}
				body.Regions = &rs
			}
			if status != "" {
				s := adminclient.CreateTenantStatus(status)
				body.Status = &s
			}
			res, err := c.CreateTenantWithResponse(cmd.Context(), body)
			if err != nil {
				return a.apiResult(0, nil, err, http.StatusCreated)
			}
			return a.apiResult(res.StatusCode(), res.Body, nil, http.StatusCreated)
		},
	}
	create.Flags().StringVar(&name, "name", "", "partner name (unique)")
	create.Flags().StringVar(&tier, "tier", "", "sandbox, standard or enterprise")
	create.Flags().StringVar(&url, "webhook-url", "", "webhook endpoint URL")
	create.Flags().StringVar(&events, "events", "", "event types to deliver, comma-separated (default: all)")
	create.Flags().StringVar(&region, "region", "", "regions, comma-separated (default: all configured)")
	create.Flags().StringVar(&status, "status", "", "active (default) or pending")
	for _, f := range []string{"name", "tier", "webhook-url"} {
		_ = create.MarkFlagRequired(f)
	}

	var format, listStatus string
	list := &cobra.Command{
		Use:   "list [--status S] [--format table|json]",
		Short: "List tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--format: want table or json, got %q", format)}
			}
			_, c, err := a.client()
			if err != nil {
				return err
			}
			params := &adminclient.ListTenantsParams{}
			if listStatus != "" {
				s := adminclient.ListTenantsParamsStatus(listStatus)
				params.Status = &s
			}
			res, err := c.ListTenantsWithResponse(cmd.Context(), params)
			if err != nil || res.StatusCode() != http.StatusOK || format == "json" {
				if err != nil {
					return a.apiResult(0, nil, err, http.StatusOK)
				}
				return a.apiResult(res.StatusCode(), res.Body, nil, http.StatusOK)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tTIER\tSTATUS\tREGIONS\tENDPOINTS\tVERSION")
			for _, t := range res.JSON200.Tenants {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", t.Id, t.Name, t.Tier, t.Status, strings.Join(t.Regions, ","), len(t.Endpoints), t.Version)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&format, "format", "table", "table or json")
	list.Flags().StringVar(&listStatus, "status", "", "only tenants with this status")

	// byID is a command on one tenant; call makes the request with the
	// plain generated client, whose body apiResult prints as it came.
	byID := func(use, short string, call func(ctx context.Context, c *adminclient.ClientWithResponses, id string) (*http.Response, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " ID",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				_, c, err := a.client()
				if err != nil {
					return err
				}
				resp, err := call(cmd.Context(), c, args[0])
				if err != nil {
					return a.apiResult(0, nil, err, http.StatusOK)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				return a.apiResult(resp.StatusCode, body, err, http.StatusOK)
			},
		}
	}
	get := byID("get", "Show one tenant", func(ctx context.Context, c *adminclient.ClientWithResponses, id string) (*http.Response, error) {
		return c.GetTenant(ctx, id)
	})
	// ifMatch is the --if-match flag of the commands that change a tenant:
	// the change applies only to that version (else 409 with the current one).
	var ifMatch int64
	cond := func() *string {
		if ifMatch <= 0 {
			return nil
		}
		v := fmt.Sprintf("%q", fmt.Sprint(ifMatch))
		return &v
	}
	suspend := byID("suspend", "Suspend a tenant (its keys stop working at the edge)", func(ctx context.Context, c *adminclient.ClientWithResponses, id string) (*http.Response, error) {
		return c.SuspendTenant(ctx, id, &adminclient.SuspendTenantParams{IfMatch: cond()})
	})
	activate := byID("activate", "Activate a tenant", func(ctx context.Context, c *adminclient.ClientWithResponses, id string) (*http.Response, error) {
		return c.ActivateTenant(ctx, id, &adminclient.ActivateTenantParams{IfMatch: cond()})
	})
	rotateKey := byID("rotate-key", "Issue a new API key (printed once); old keys stay valid for partner.keys.rotation_overlap_sec", func(ctx context.Context, c *adminclient.ClientWithResponses, id string) (*http.Response, error) {
		return c.RotateKey(ctx, id, &adminclient.RotateKeyParams{IfMatch: cond()})
	})
	var endpointID string
	rotateSecret := byID("rotate-secret", "Issue a new webhook secret (printed once); old secrets keep signing for the overlap", func(ctx context.Context, c *adminclient.ClientWithResponses, id string) (*http.Response, error) {
		p := &adminclient.RotateSecretParams{IfMatch: cond()}
		if endpointID != "" {
			p.EndpointId = &endpointID
		}
		return c.RotateSecret(ctx, id, p)
	})
	rotateSecret.Flags().StringVar(&endpointID, "endpoint-id", "", "rotate only this endpoint's secret")
	for _, c := range []*cobra.Command{suspend, activate, rotateKey, rotateSecret} {
		c.Flags().Int64Var(&ifMatch, "if-match", 0, "change the tenant only if it is at this version (else 409 with the current version)")
	}
	reencrypt := &cobra.Command{
		Use:   "reencrypt",
		Short: "Re-encrypt every tenant's webhook secrets with the active key (partner.keys.active_secret_key)",
		Long: `reencrypt rewrites every tenant whose webhook secrets are stored in the clear or
sealed with another key. Run it after making a new key active in every
process's configuration; when a second run reports nothing resealed and nothing
unreadable, the old key can be removed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.ResealSecrets(cmd.Context())
			if err != nil {
				return a.apiResult(0, nil, err, http.StatusOK)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			return a.apiResult(resp.StatusCode, body, err, http.StatusOK)
		},
	}
	cmd.AddCommand(create, list, get, suspend, activate, rotateKey, rotateSecret, reencrypt)
	return cmd
}

// optAs is a flag value as the generated client's type for it; nil when
// the flag is empty.
func optAs[T ~string](s string) *T {
	if s == "" {
		return nil
	}
	v := T(s)
	return &v
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// migrate applies the ClickHouse migrations and prints what it did.
func (a *app) migrate(ctx context.Context, cfg *config.Config) error {
	log := a.logger(cfg)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	conn, err := chdb.Open(cctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	v, _ := chdb.ServerVersion(cctx, conn)
	applied, err := chdb.Migrate(cctx, conn, log.With("component", "migrate"), chdb.For(cfg.ClickHouse))
	if err != nil {
		return err
	}
	all, _ := chdb.Migrations()
	fmt.Fprintf(a.stdout, "clickhouse %s at %v, database %s: %d migration(s) applied now, %d in total\n",
		v, cfg.ClickHouse.Addr, cfg.ClickHouse.Database, len(applied), len(all))
	return nil
}
