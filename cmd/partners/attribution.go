package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/partners-engine/partners-engine/control-plane/adminclient"
	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
)

// attributionToolCmds are the analyst commands: `partners roi`.
func (a *app) attributionToolCmds() []*cobra.Command {
	var (
		partner, model, format string
		window                 int
	)
	cmd := &cobra.Command{
		Use:   "roi --partner-id ID [--window 30] [--model last_touch] [--format table|json]",
		Short: "Partner ROI, CPL, CAC and LTV per attribution model",
		Long: `roi reads GET /api/v1/analytics/roi through the admin API (admin.url with
admin.token), so the CLI sees exactly what partners and dashboards see and
needs no ClickHouse credentials. --model "" (or all) lists every model.
Money is in partner.attribution.base_currency, to the cent as the server
computes it. The table names partners by name and prints every number as the
server sent it (conversions, new customers, ROI and LTV:CAC exactly, never
padded or rounded to a width); --format json prints the answer unchanged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--format: want table or json, got %q", format)}
			}
			if window < roi.MinWindow || window > roi.MaxWindow {
				return &exitError{code: exitUsage, err: fmt.Errorf("--window: must be between %d and %d days, got %d", roi.MinWindow, roi.MaxWindow, window)}
			}
			if model == "all" {
				model = ""
			}
			if model != "" && !models.Valid(model) {
				return &exitError{code: exitUsage, err: fmt.Errorf("--model: want one of %s, or all, got %q", strings.Join(models.All, ", "), model)}
			}
			_, c, err := a.client()
			if err != nil {
				return err
			}
			params := &adminclient.GetROIParams{Window: &window}
			if partner != "" {
				params.PartnerId = &partner
			}
			if model != "" {
				m := adminclient.GetROIParamsModel(model)
				params.Model = &m
			}
			res, err := c.GetROIWithResponse(cmd.Context(), params)
			if err != nil {
				return a.apiResult(0, nil, err, http.StatusOK)
			}
			if res.StatusCode() != http.StatusOK || format == "json" || res.JSON200 == nil {
				return a.apiResult(res.StatusCode(), res.Body, nil, http.StatusOK)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(a.stdout, "window %d days, %s to %s (UTC)\n", res.JSON200.WindowDays, res.JSON200.From, res.JSON200.To)
			fmt.Fprintln(tw, "PARTNER\tMODEL\tREVENUE\tCOST\tCONVERSIONS\tLEADS\tNEW CUST\tCUSTOMERS\tROI\tCPL\tCAC\tLTV\tLTV:CAC")
			for _, r := range res.JSON200.Rows {
				name := r.PartnerId
				if r.PartnerName != nil && *r.PartnerName != "" {
					name = *r.PartnerName
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", name, r.Model, r.Revenue, r.Cost,
					num(r.Conversions), r.Leads, num(r.NewCustomers), r.Customers, optF(r.Roi), optS(r.Cpl), optS(r.Cac), optS(r.Ltv), optF(r.LtvCac))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&partner, "partner-id", "", "partner (tenant) id; empty with the admin token: every partner")
	cmd.Flags().IntVar(&window, "window", 30, "window in days (1..3650), ending today (UTC)")
	cmd.Flags().StringVar(&model, "model", "last_touch", "attribution model: "+strings.Join(models.All, ", ")+", or all")
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return []*cobra.Command{cmd}
}

// num prints a number exactly as the server sent it: the shortest decimal
// that is the same float64 (the JSON number), never rounded to a width.
func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func optF(f *float64) string {
	if f == nil {
		return "-"
	}
	return num(*f)
}

func optS(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}
