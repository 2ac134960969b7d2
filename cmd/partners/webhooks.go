package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/control-plane/adminclient"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// webhookToolCmds are `partners events publish` and `partners dlq`.
func (a *app) webhookToolCmds() []*cobra.Command {
	return []*cobra.Command{a.eventsCmd(), a.dlqCmd()}
}

func (a *app) eventsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Publish product events"}
	var typ, data, id, tenantID, source string
	publish := &cobra.Command{
		Use:   "publish --type T --data JSON [--id ID] [--tenant-id ID]",
		Short: "Publish a product event to partners.events.v1",
		Long: `publish sends one event to partners.events.v1 on kafka.brokers, or, when
none are configured, to the embedded broker of a running 'partners dev'
(127.0.0.1:<kafka.embedded_port>). The id defaults to a random one; publishing
the same id again is the same event (same webhook-ids).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadClient()
			if err != nil {
				return err
			}
			if id == "" {
				id = "evt_" + strings.ReplaceAll(time.Now().UTC().Format("20060102T150405.000000000"), ".", "")
			}
			if !slices.Contains(cfg.Partner.Webhooks.EventTypes, typ) {
				return &exitError{code: exitUsage, err: fmt.Errorf("--type: %q is not in partner.webhooks.event_types of %s (%s); the processor would dead-letter it — add it there first",
					typ, a.configPath, strings.Join(cfg.Partner.Webhooks.EventTypes, ", "))}
			}
			if err := jsonObject(data); err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("--data: %w", err)}
			}
			ev := schemas.Event{SchemaVersion: schemas.SchemaVersion, ID: id, Type: typ, Source: source,
				OccurredAt: time.Now().UTC(), TenantID: tenantID, Data: json.RawMessage(data)}
			b, err := json.Marshal(ev)
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("--data: %w", err)}
			}
			if err := schemas.Validate(schemas.KindEvent, b); err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("invalid event: %w", err)}
			}
			brokers := cfg.Kafka.Brokers
			if len(brokers) == 0 {
				brokers = []string{fmt.Sprintf("127.0.0.1:%d", cfg.Kafka.EmbeddedPort)}
			}
			cl, err := kafka.NewClient(cfg.Kafka, brokers, a.logger(cfg))
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			topic := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}.Topic(schemas.TopicEvents)
			r, err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(id), Value: b}).First()
			if err != nil {
				return fmt.Errorf("publish to %s on %v (is 'partners dev' running?): %w", topic, brokers, err)
			}
			out, _ := json.Marshal(map[string]any{"id": id, "type": typ, "topic": r.Topic, "partition": r.Partition, "offset": r.Offset})
			fmt.Fprintln(a.stdout, string(out))
			return nil
		},
	}
	publish.Flags().StringVar(&typ, "type", "", "event type, e.g. order.created (must be in partner.webhooks.event_types)")
	publish.Flags().StringVar(&data, "data", "{}", "event payload, a JSON object")
	publish.Flags().StringVar(&id, "id", "", "event id (default: generated)")
	publish.Flags().StringVar(&tenantID, "tenant-id", "", "deliver to this tenant only")
	publish.Flags().StringVar(&source, "source", "cli", "producing system")
	_ = publish.MarkFlagRequired("type")
	cmd.AddCommand(publish)
	return cmd
}

// jsonObject checks that s is one JSON object, with a message a user can act
// on (where the JSON breaks, or what it is instead).
func jsonObject(s string) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("not valid JSON at byte %d: %s (got %s)", se.Offset, se.Error(), quoteShort(s))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("not valid JSON: it ends early (got %s)", quoteShort(s))
		}
		return fmt.Errorf("not valid JSON: %s (got %s)", err.Error(), quoteShort(s))
	}
	if dec.More() {
		return fmt.Errorf("not one JSON object: more follows the first value (got %s)", quoteShort(s))
	}
	if _, ok := v.(map[string]any); !ok {
		return fmt.Errorf("must be a JSON object like '{\"order_id\":\"o1\"}', got %s", quoteShort(s))
	}
	return nil
}

func quoteShort(s string) string {
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return strconv.Quote(s)
}

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, replay and recover the webhooks dead-letter queue through the admin API; read any dead-letter topic from Kafka",
	}
	var tenant, endpoint, eventType, reason, status, since, until, format, pageToken string
	var deliveryIDs []string
	var limit int
	var force bool
	addFilters := func(c *cobra.Command) {
		c.Flags().StringVar(&tenant, "tenant", "", "only this tenant id")
		c.Flags().StringVar(&endpoint, "endpoint", "", "only this endpoint id")
		c.Flags().StringVar(&eventType, "event-type", "", "only this event type")
		c.Flags().StringVar(&reason, "reason", "", "only this reason code (http_status, timeout, connection_refused, breaker_open, …)")
		c.Flags().StringVar(&since, "since", "", "only dead letters since an RFC 3339 time or a duration ago (24h)")
		c.Flags().StringVar(&until, "until", "", "only dead letters before an RFC 3339 time or a duration ago")
		c.Flags().StringSliceVar(&deliveryIDs, "delivery-id", nil, "only these deliveries (webhook-ids; repeat or comma-separate)")
	}
	opt := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	ids := func() *adminclient.DLQDeliveryID {
		if len(deliveryIDs) == 0 {
			return nil
		}
		v := adminclient.DLQDeliveryID(deliveryIDs)
		return &v
	}
	list := &cobra.Command{
		Use:   "list [--tenant ID] [--endpoint ID] [--event-type T] [--reason R] [--status S] [--since 24h] [--until T] [--limit N] [--page-token P] [--format table|json]",
		Short: "List dead letters from the DLQ index, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return &exitError{code: exitUsage, err: fmt.Errorf("--format: want table or json, got %q", format)}
			}
			_, c, err := a.client()
			if err != nil {
				return err
			}
			params := &adminclient.ListDLQParams{Tenant: opt(tenant), Endpoint: opt(endpoint), EventType: opt(eventType),
				Reason: optAs[adminclient.ListDLQParamsReason](reason), Since: opt(since), Until: opt(until), DeliveryId: ids(), PageToken: opt(pageToken)}
			if status != "" {
				st := adminclient.ListDLQParamsStatus(status)
				params.Status = &st
			}
			if limit > 0 {
				params.Limit = &limit
			}
			res, err := c.ListDLQWithResponse(cmd.Context(), params)
			if err != nil {
				return a.apiResult(0, nil, err, http.StatusOK)
			}
			if res.StatusCode() != http.StatusOK || format == "json" {
				return a.apiResult(res.StatusCode(), res.Body, nil, http.StatusOK)
			}
			if len(res.JSON200.DeadLetters) == 0 {
				fmt.Fprintln(a.stdout, "no dead letters match (status dead unless --status says otherwise; --status all lists replayed ones too)")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DELIVERY ID\tTENANT\tENDPOINT\tEVENT TYPE\tSTATUS\tATTEMPTS\tLAST STATUS\tDEAD AT\tREASON CODE\tREASON")
			for _, d := range res.JSON200.DeadLetters {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", deref(d.DeliveryId), deref(d.TenantId), deref(d.EndpointId),
					deref(d.EventType), d.Status, d.Attempts, lastStatus(d.LastStatus), d.DeadAt.Format(time.RFC3339), deref(d.ReasonCode),
					dlqReason(d.Reason, deref(d.LastError)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next := res.JSON200.NextPageToken; next != nil {
				fmt.Fprintf(a.stdout, "\nmore: --page-token %s\n", *next)
			}
			return nil
		},
	}
	addFilters(list)
	list.Flags().StringVar(&status, "status", "", "dead (default), replayed, delivered, dropped or all")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (API default 100)")
	list.Flags().StringVar(&pageToken, "page-token", "", "the page after this token (printed after a full page)")
	list.Flags().StringVar(&format, "format", "table", "table or json")
	replay := &cobra.Command{
		Use:   "replay [--tenant ID] [--endpoint ID] [--event-type T] [--reason R] [--since 24h] [--until T] [--delivery-id ID] [--force]",
		Short: "Replay matching dead letters with their original webhook-id and payload (each once, unless --force)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := a.client()
			if err != nil {
				return err
			}
			params := &adminclient.ReplayDLQParams{Tenant: opt(tenant), Endpoint: opt(endpoint), EventType: opt(eventType),
				Reason: optAs[adminclient.ReplayDLQParamsReason](reason), Since: opt(since), Until: opt(until), DeliveryId: ids()}
			if force {
				params.Force = &force
			}
			res, err := c.ReplayDLQWithResponse(cmd.Context(), params)
			if err != nil {
				return a.apiResult(0, nil, err, http.StatusOK)
			}
			return a.apiResult(res.StatusCode(), res.Body, nil, http.StatusOK)
		},
	}
	addFilters(replay)
	replay.Flags().BoolVar(&force, "force", false, "also replay dead letters replayed before")
	var recEndpoint, recSince string
	recoverCmd := &cobra.Command{
		Use:   "recover --endpoint ID --since T",
		Short: "Re-deliver an endpoint's failed deliveries since T (an RFC 3339 time or a duration ago), oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.RecoverEndpointWithResponse(cmd.Context(), &adminclient.RecoverEndpointParams{Endpoint: recEndpoint, Since: recSince})
			if err != nil {
				return a.apiResult(0, nil, err, http.StatusOK)
			}
			return a.apiResult(res.StatusCode(), res.Body, nil, http.StatusOK)
		},
	}
	recoverCmd.Flags().StringVar(&recEndpoint, "endpoint", "", "endpoint id (required)")
	recoverCmd.Flags().StringVar(&recSince, "since", "", "RFC 3339 time or a duration like 6h (required)")
	_ = recoverCmd.MarkFlagRequired("endpoint")
	_ = recoverCmd.MarkFlagRequired("since")
	cmd.AddCommand(list, replay, recoverCmd, a.dlqReadCmd())
	return cmd
}

// lastStatus is a dead letter's last HTTP status, or "—" when no attempt got
// an HTTP answer (refused, timed out, held by the breaker, never attempted):
// the reason code and text say what happened instead.
func lastStatus(st *int) string {
	if st == nil || *st == 0 {
		return "—"
	}
	return fmt.Sprint(*st)
}

// dlqReason is a dead letter's reason text, followed by its last attempt's
// error where the text does not already carry it (a delivery held until
// its maximum age, or rejected after failed attempts, still shows what the
// endpoint last did).
func dlqReason(reason, lastError string) string {
	if lastError == "" || strings.Contains(reason, lastError) {
		return reason
	}
	return reason + " (last error: " + lastError + ")"
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
