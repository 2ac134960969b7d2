// Package demo drives a realistic end-to-end run against a running
// partners-engine: three tenants (sandbox, standard, enterprise) with local
// webhook receivers (healthy, flaky, rejecting), partner calls through the
// ext_authz API exactly as Envoy makes them, product events, conversions and
// costs; then it waits for deliveries, the DLQ and ROI to settle and reports
// them. `partners demo` prints the report; the end-to-end test asserts it.
package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/partners-engine/partners-engine/control-plane/adminclient"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// Options configure a run.
type Options struct {
	Config     *config.Config
	Brokers    []string
	AdminURL   string
	AdminToken string
	ExtAuthz   string      // host:port of the edge plugin
	ClickHouse driver.Conn // where the delivery log lands
	Progress   io.Writer   // one progress line per step; nil: quiet
	Events     int         // product events (default 20)
	Users      int         // users who call through partners and convert (default 12)
	Settle     time.Duration
	Region     string
	Models     []string
	// Verify checks each webhook request the receivers get; nil:
	// VerifySignature. The end-to-end test passes the official Standard
	// Webhooks library, which the binary does not link.
	Verify Verifier
}

// Tenant is one scenario tenant.
type Tenant struct {
	ID, Name, Tier, Receiver string
	Key, Secret              string
}

// Result is what a run observed.
type Result struct {
	Tenants     []Tenant
	Checks      map[string]int            // authz outcome ("ok", "401", "403") -> count
	Deliveries  map[string]map[string]int // tenant name -> outcome -> distinct webhook ids
	Received    map[string]int            // tenant name -> signature-verified requests received
	BadSigs     int                       // requests whose signature did not verify
	DLQ         map[string]int            // tenant name -> dead letters
	DLQSample   []adminclient.DeadLetter  // a few dead letters, as operators see them
	ROI         []ROIRow
	TraceID     string // trace id of one delivery, from the delivery log
	DeliveryID  string // its webhook-id
	Events      int
	Conversions int
	Elapsed     time.Duration
}

// ROIRow is one partner × model line.
type ROIRow struct {
	Partner, Model string
	Revenue, Cost  string
	Conversions    float64
	Leads          int
	NewCustomers   float64
	ROI, LTVCAC    *float64
	CPL, CAC, LTV  *string
}

type receiver struct {
	mu       sync.Mutex
	name     string
	mode     string // healthy | flaky | rejecting
	secret   string
	attempts map[string]int // webhook-id -> attempts seen
	order    []string       // webhook-ids in order of first arrival
	verified int
	badSigs  int
	verify   Verifier
	url      string
	srv      *http.Server
}

// start serves the receiver on a loopback port.
func (r *receiver) start() error {
	lis, err := receiverListener()
	if err != nil {
		return err
	}
	r.url = "http://" + lis.Addr().String()
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(lis) }() // ends when close shuts the server
	return nil
}

func (r *receiver) close() {
	if r.srv != nil {
		_ = r.srv.Close()
	}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.verify(r.secret, body, req.Header) == nil {
		r.verified++
	} else {
		r.badSigs++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id := req.Header.Get("webhook-id")
	if _, seen := r.attempts[id]; !seen {
		r.order = append(r.order, id)
	}
	r.attempts[id]++
	switch {
	case r.mode == "rejecting":
		// A permanent failure: dead-lettered at once. (A partner that is
		// down, 5xx or unreachable, is held by its circuit breaker for up
		// to retry.max_age_sec, not dead-lettered within a demo.)
		w.WriteHeader(http.StatusUnprocessableEntity)
	case r.mode == "flaky" && r.attempts[id] == 1 && len(r.order)%2 == 1:
		// Every other webhook fails its first attempt: retries without
		// enough consecutive failures to open the circuit breaker.
		w.WriteHeader(http.StatusInternalServerError)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// receiverListener listens on a free loopback port of 9900-9999: the
// ports the local configuration's SSRF allow-list lets webhooks reach.
func receiverListener() (net.Listener, error) {
	var last error
	for port := 9900; port <= 9999; port++ {
		lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			return lis, nil
		}
		last = err
	}
	return nil, fmt.Errorf("no free loopback port in 9900-9999 for the demo's receivers: %w", last)
}

func (o *Options) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "  … "+format+"\n", args...)
	}
}

// Run drives the scenario and waits for it to settle.
func Run(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	if o.Events == 0 {
		o.Events = 20
	}
	if o.Users == 0 {
		o.Users = 12
	}
	if o.Verify == nil {
		o.Verify = VerifySignature
	}
	if o.Settle == 0 {
		o.Settle = 2 * time.Minute
	}
	if o.Region == "" {
		o.Region = o.Config.Regions[0].Name
	}
	if len(o.Models) == 0 {
		o.Models = []string{"first_touch", "last_touch", "linear", "time_decay", "position_based"}
	}
	res := &Result{Checks: map[string]int{}, Deliveries: map[string]map[string]int{}, Received: map[string]int{}, DLQ: map[string]int{}}
	defer func() { res.Elapsed = time.Since(start) }()
	api, err := adminclient.NewClientWithResponses(o.AdminURL,
		adminclient.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			if r.Header.Get("Authorization") == "" {
				r.Header.Set("Authorization", "Bearer "+o.AdminToken)
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000)

	// 0. The tenants of earlier runs: their receivers ended with those runs.
	if n, err := suspendEarlierRuns(ctx, api); err != nil {
		return nil, err
	} else if n > 0 {
		o.progress("suspended %d tenants of earlier demo runs (their receivers ended with those runs)", n)
	}

	// 1. Tenants with their receivers.
	var receivers []*receiver
	defer func() {
		for _, r := range receivers {
			r.close()
			r.mu.Lock()
			res.Received[r.name] = r.verified
			res.BadSigs += r.badSigs
			r.mu.Unlock()
		}
	}()
	for _, spec := range []struct{ tier, mode string }{{"sandbox", "healthy"}, {"standard", "flaky"}, {"enterprise", "rejecting"}} {
		rcv := &receiver{mode: spec.mode, attempts: map[string]int{}, verify: o.Verify}
		if err := rcv.start(); err != nil {
			return nil, fmt.Errorf("webhook receiver: %w", err)
		}
		receivers = append(receivers, rcv)
		name := fmt.Sprintf("Demo %s %s", strings.ToUpper(spec.tier[:1])+spec.tier[1:], suffix)
		events := []string{"order.created"}
		req := adminclient.CreateTenant{Name: name, Tier: adminclient.CreateTenantTier(spec.tier), WebhookUrl: rcv.url + "/hook", Events: &events}
		if spec.tier == "enterprise" { // the identity of its client certificate on the mTLS listener
			ids := []string{enterpriseIdentity(suffix)}
			req.ClientIdentities = &ids
		}
		resp, err := api.CreateTenantWithResponse(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("create tenant: %w", err)
		}
		if resp.JSON201 == nil {
			return nil, fmt.Errorf("create tenant: %d %s", resp.StatusCode(), resp.Body)
		}
		rcv.mu.Lock()
		rcv.name, rcv.secret = name, resp.JSON201.WebhookSecret
		rcv.mu.Unlock()
		res.Tenants = append(res.Tenants, Tenant{ID: resp.JSON201.Id, Name: name, Tier: spec.tier, Receiver: spec.mode,
			Key: resp.JSON201.ApiKey, Secret: resp.JSON201.WebhookSecret})
	}
	o.progress("created 3 tenants (sandbox → healthy receiver, standard → flaky, enterprise → rejecting)")

	// 2. Partner calls through ext_authz, as Envoy makes them.
	conn, err := grpc.NewClient(o.ExtAuthz, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	authz := authv3.NewAuthorizationClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for { // the edge learns new tenants from the tenants topic
		code, err := Check(ctx, authz, CheckInput{Key: res.Tenants[0].Key, Path: "/api/v1/partners/orders", Region: o.Region})
		if err == nil && code == 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("edge plugin at %s never accepted the new tenant's key (last code %d, err %v)", o.ExtAuthz, code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	calls := 0
	for u := 0; u < o.Users; u++ {
		// Every user touches one or two partners, with UTM parameters.
		touched := []int{u % 3}
		if u%2 == 0 {
			touched = append(touched, (u+1)%3)
		}
		for _, ti := range touched {
			q := url.Values{"utm_source": {"partner"}, "utm_medium": {"api"}, "utm_campaign": {"demo"}}
			in := CheckInput{Key: res.Tenants[ti].Key, Path: "/api/v1/partners/orders?" + q.Encode(),
				UserID: fmt.Sprintf("demo-user-%s-%d", suffix, u), Referer: "https://partner.example/landing", Region: o.Region}
			if res.Tenants[ti].Tier == "enterprise" { // arrives on the mTLS listener
				in.Principal = enterpriseIdentity(suffix)
			}
			code, err := Check(ctx, authz, in)
			if err != nil {
				return nil, fmt.Errorf("check: %w", err)
			}
			res.Checks[codeName(code)]++
			calls++
		}
	}
	for _, bad := range []CheckInput{{Key: "", Path: "/api/v1/partners/orders"}, {Key: "pk_sbx_" + strings.Repeat("x", 43), Path: "/api/v1/partners/orders"}} {
		bad.Region = o.Region
		code, err := Check(ctx, authz, bad)
		if err != nil {
			return nil, err
		}
		res.Checks[codeName(code)]++
	}
	o.progress("%d partner calls through ext_authz (+2 with a missing and an unknown key)", calls)

	// 3. Product events, conversions and costs.
	prod, err := kafka.NewClient(o.Config.Kafka, o.Brokers, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	defer prod.Close()
	names := kafka.Names{Prefix: o.Config.Kafka.TopicPrefix}
	var recs []*kgo.Record
	now := time.Now().UTC().Truncate(time.Second)
	// Every event names its tenant (tenant_id), so only this run's partners
	// receive them: not the tenants of earlier runs, nor your own.
	for ti, t := range res.Tenants {
		for i := 0; i < o.Events; i++ {
			ev := schemas.Event{SchemaVersion: "1", ID: fmt.Sprintf("evt_demo_%s_%d_%04d", suffix, ti, i), Type: "order.created", Source: "demo",
				OccurredAt: now, TenantID: t.ID,
				Data: json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%s_%d","amount":"%d.00","currency":"USD"}`, suffix, i, 10+i))}
			recs = append(recs, record(ctx, names.Topic(schemas.TopicEvents), ev.ID, ev))
		}
	}
	for u := 0; u < o.Users; u++ {
		if u%3 == 2 {
			continue // not every user converts
		}
		c := schemas.Conversion{SchemaVersion: "1", ID: fmt.Sprintf("conv_demo_%s_%d", suffix, u), UserID: fmt.Sprintf("demo-user-%s-%d", suffix, u),
			Kind: schemas.ConversionPurchase, Amount: decimal.NewFromInt(int64(100 + 10*u)), Currency: []string{"USD", "EUR"}[u%2],
			NewCustomer: u%4 == 0, OccurredAt: now.Add(time.Second)}
		recs = append(recs, record(ctx, names.Topic(schemas.TopicConversions), c.UserID, c))
		res.Conversions++
		if u == 0 { // one refund
			r := schemas.Conversion{SchemaVersion: "1", ID: fmt.Sprintf("conv_demo_%s_%d_refund", suffix, u), UserID: c.UserID,
				Kind: schemas.ConversionRefund, Amount: c.Amount, Currency: c.Currency, RefundOf: c.ID, OccurredAt: now.Add(2 * time.Second)}
			recs = append(recs, record(ctx, names.Topic(schemas.TopicConversions), r.UserID, r))
		}
	}
	for i, t := range res.Tenants {
		for d := 0; d < 3; d++ {
			c := schemas.Cost{SchemaVersion: "1", ID: fmt.Sprintf("cost_demo_%s_%d_%d", suffix, i, d), PartnerID: t.ID,
				Amount: decimal.NewFromInt(int64(40 + 10*i)), Currency: "USD", Category: "commission", OccurredAt: now.Add(-time.Duration(d) * 24 * time.Hour)}
			recs = append(recs, record(ctx, names.Topic(schemas.TopicCosts), c.PartnerID, c))
		}
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	res.Events = o.Events
	o.progress("published %d product events to each partner (tenant_id set: no other tenant receives them), %d conversions (+1 refund), 9 cost records",
		o.Events, res.Conversions)

	// 4. Wait for deliveries, the DLQ and ROI.
	settleBy := time.Now().Add(o.Settle)
	lastLine := ""
	for {
		if err := res.collect(ctx, o, api); err != nil && time.Now().After(settleBy) {
			return res, err
		}
		healthy := res.Deliveries[res.Tenants[0].Name][schemas.OutcomeDelivered]
		flaky := res.Deliveries[res.Tenants[1].Name][schemas.OutcomeDelivered]
		dead := res.DLQ[res.Tenants[2].Name]
		line := fmt.Sprintf("delivered healthy %d/%d, flaky %d/%d; rejecting endpoint in DLQ %d/%d; ROI rows %d",
			healthy, o.Events, flaky, o.Events, dead, o.Events, len(res.ROI))
		if line != lastLine {
			o.progress("%s", line)
			lastLine = line
		}
		if healthy >= o.Events && flaky >= o.Events && dead >= o.Events && res.roiReady() {
			break
		}
		if time.Now().After(settleBy) {
			return res, fmt.Errorf("not settled after %v: %s", o.Settle, line)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return res, nil
}

// demoName is the name pattern of the tenants Run creates.
var demoName = regexp.MustCompile(`^Demo (Sandbox|Standard|Enterprise) [0-9]+$`)

// suspendEarlierRuns suspends the active tenants earlier runs created: their
// receivers are gone, so anything delivered to them would dead-letter.
func suspendEarlierRuns(ctx context.Context, api *adminclient.ClientWithResponses) (int, error) {
	active := adminclient.ListTenantsParamsStatus(schemas.StatusActive)
	resp, err := api.ListTenantsWithResponse(ctx, &adminclient.ListTenantsParams{Status: &active})
	if err != nil {
		return 0, fmt.Errorf("list tenants: %w", err)
	}
	if resp.JSON200 == nil {
		return 0, fmt.Errorf("list tenants: %d %s", resp.StatusCode(), resp.Body)
	}
	n := 0
	for _, t := range resp.JSON200.Tenants {
		if !demoName.MatchString(t.Name) {
			continue
		}
		s, err := api.SuspendTenantWithResponse(ctx, t.Id, nil)
		if err != nil {
			return n, fmt.Errorf("suspend %s: %w", t.Id, err)
		}
		if s.StatusCode() != http.StatusOK {
			return n, fmt.Errorf("suspend %s: %d %s", t.Id, s.StatusCode(), s.Body)
		}
		n++
	}
	return n, nil
}

func (r *Result) roiReady() bool {
	for _, row := range r.ROI {
		if row.Revenue != "" && row.Revenue != "0" && row.Revenue != "0.00" {
			return true
		}
	}
	return false
}

// collect reads the delivery log, the DLQ and ROI.
func (r *Result) collect(ctx context.Context, o Options, api *adminclient.ClientWithResponses) error {
	ids := make([]string, 0, len(r.Tenants))
	byID := map[string]string{}
	for _, t := range r.Tenants {
		ids = append(ids, t.ID)
		byID[t.ID] = t.Name
	}
	rows, err := o.ClickHouse.Query(ctx, chsql.DemoDeliveryOutcomes.SQL, ids)
	if err != nil {
		return fmt.Errorf("delivery log: %w", err)
	}
	deliveries := map[string]map[string]int{}
	for rows.Next() {
		var tenant, outcome string
		var n uint64
		if err := rows.Scan(&tenant, &outcome, &n); err != nil {
			rows.Close()
			return err
		}
		name := byID[tenant]
		if deliveries[name] == nil {
			deliveries[name] = map[string]int{}
		}
		deliveries[name][outcome] = int(n)
	}
	rows.Close()
	r.Deliveries = deliveries
	// Asked every round, not once: an early round may see only first
	// attempts delivered, and the trace shown should be a retried one
	// (the query ranks the highest attempt first).
	var trace, id string
	if err := o.ClickHouse.QueryRow(ctx, chsql.DemoFirstTrace.SQL, r.Tenants[1].ID, schemas.OutcomeDelivered).Scan(&trace, &id); err == nil {
		r.TraceID, r.DeliveryID = trace, id
	}
	for _, t := range r.Tenants {
		tenant := t.ID
		limit := 10000
		dl, err := api.ListDLQWithResponse(ctx, &adminclient.ListDLQParams{Tenant: &tenant, Limit: &limit})
		if err != nil {
			return err
		}
		if dl.JSON200 == nil {
			return fmt.Errorf("dlq list: %d %s", dl.StatusCode(), dl.Body)
		}
		seen := map[string]bool{}
		for _, d := range dl.JSON200.DeadLetters {
			if d.DeliveryId != nil {
				if !seen[*d.DeliveryId] && len(r.DLQSample) < 3 && t.ID == r.Tenants[len(r.Tenants)-1].ID {
					r.DLQSample = append(r.DLQSample, d)
				}
				seen[*d.DeliveryId] = true
			}
		}
		r.DLQ[t.Name] = len(seen)
	}
	var roi []ROIRow
	for _, t := range r.Tenants {
		for _, m := range o.Models {
			partner, model := t.ID, adminclient.GetROIParamsModel(m)
			resp, err := api.GetROIWithResponse(ctx, &adminclient.GetROIParams{PartnerId: &partner, Model: &model})
			if err != nil {
				return err
			}
			if resp.JSON200 == nil {
				return fmt.Errorf("roi: %d %s", resp.StatusCode(), resp.Body)
			}
			for _, row := range resp.JSON200.Rows {
				roi = append(roi, ROIRow{Partner: t.Name, Model: string(row.Model), Revenue: row.Revenue, Cost: row.Cost,
					Conversions: row.Conversions, Leads: int(row.Leads), NewCustomers: row.NewCustomers,
					ROI: toF(row.Roi), LTVCAC: toF(row.LtvCac), CPL: row.Cpl, CAC: row.Cac, LTV: row.Ltv})
			}
		}
	}
	r.ROI = roi
	return nil
}

func toF[T ~float32 | ~float64](p *T) *float64 {
	if p == nil {
		return nil
	}
	v := float64(*p)
	return &v
}

func record(ctx context.Context, topic, key string, v any) *kgo.Record {
	b, _ := json.Marshal(v)
	r := &kgo.Record{Topic: topic, Key: []byte(key), Value: b}
	kafka.Inject(ctx, r)
	return r
}

// enterpriseIdentity is the demo enterprise partner's client certificate
// identity (a SPIFFE id), registered with its tenant.
func enterpriseIdentity(suffix string) string {
	return "spiffe://partners.example/demo-enterprise-" + suffix
}

// CheckInput is one partner request as Envoy presents it to ext_authz.
type CheckInput struct {
	Key, Path, UserID, Referer, Region, TraceParent string
	// Principal is the client certificate's identity, which Envoy reports
	// for requests on the mTLS (enterprise) listener.
	Principal string
}

// Check sends a CheckRequest shaped as Envoy's and returns the HTTP status
// Envoy would answer with (0 when allowed).
func Check(ctx context.Context, c authv3.AuthorizationClient, in CheckInput) (int, error) {
	headers := map[string]string{
		":authority": "edge." + in.Region + ".partners.example", ":method": "GET", ":path": in.Path, ":scheme": "https",
		"user-agent": "partners-demo/1.0", "x-request-id": fmt.Sprintf("%d", time.Now().UnixNano()),
	}
	if in.Key != "" {
		headers["authorization"] = "Bearer " + in.Key
	}
	if in.UserID != "" {
		headers["x-partner-user-id"] = in.UserID
	}
	if in.Referer != "" {
		headers["referer"] = in.Referer
	}
	if in.TraceParent != "" {
		headers["traceparent"] = in.TraceParent
	} else {
		carrier := propagation.MapCarrier{}
		otel.GetTextMapPropagator().Inject(ctx, carrier)
		if tp := carrier.Get("traceparent"); tp != "" {
			headers["traceparent"] = tp
		}
	}
	path, _, _ := strings.Cut(in.Path, "?")
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sockAddr("203.0.113.7", 51234), Principal: in.Principal},
		Destination: &authv3.AttributeContext_Peer{Address: sockAddr("10.0.0.10", 10000)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: headers["x-request-id"], Method: "GET", Headers: headers, Path: in.Path,
				Host: headers[":authority"], Scheme: "https", Protocol: "HTTP/1.1",
			},
		},
		ContextExtensions: map[string]string{"region": in.Region, "route": path},
	}}
	resp, err := c.Check(ctx, req)
	if err != nil {
		return 0, err
	}
	if resp.GetStatus().GetCode() == 0 {
		return 0, nil
	}
	if d := resp.GetDeniedResponse(); d != nil && d.GetStatus() != nil {
		return int(d.GetStatus().GetCode()), nil
	}
	return 403, nil
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func codeName(code int) string {
	if code == 0 {
		return "ok"
	}
	return fmt.Sprint(code)
}

// Print writes the summary.
func (r *Result) Print(w io.Writer) {
	fmt.Fprintf(w, "\nScenario finished in %s: %d product events to each of 3 partners.\n\n", r.Elapsed.Round(time.Second), r.Events)
	fmt.Fprintln(w, "Edge (ext_authz) decisions:")
	keys := make([]string, 0, len(r.Checks))
	for k := range r.Checks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-4s %d\n", k, r.Checks[k])
	}
	fmt.Fprintln(w, "\nDeliveries by outcome (distinct webhook ids, from the ClickHouse delivery log):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PARTNER\tRECEIVER\tDELIVERED\tRETRIED\tFAILED\tDLQ\tREQUESTS")
	for _, t := range r.Tenants {
		d := r.Deliveries[t.Name]
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\n", t.Name, t.Receiver, d[schemas.OutcomeDelivered], d[schemas.OutcomeRetry],
			d[schemas.OutcomeFailed], r.DLQ[t.Name], r.Received[t.Name])
	}
	_ = tw.Flush()
	fmt.Fprintf(w, `  DELIVERED, RETRIED, FAILED: webhooks with a delivered attempt, a failed attempt that was retried,
    and a permanent failure (the rejecting receiver answers 422: dead-lettered at once, no retry).
  DLQ: dead letters, from `+"`partners dlq list`"+`. REQUESTS: HTTP requests the receiver got, each
    signature-checked with the Standard Webhooks scheme; a retried webhook is requested again
    (flaky: %d webhooks, %d of them twice).
`, r.Events, (r.Events+1)/2)
	if len(r.DLQSample) > 0 {
		fmt.Fprintln(w, "\nDead-letter queue (first entries; `partners dlq list`, `partners dlq replay --tenant ID`):")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  WEBHOOK-ID\tEVENT\tATTEMPTS\tLAST STATUS\tREASON")
		for _, d := range r.DLQSample {
			status := "—"
			if d.LastStatus != nil && *d.LastStatus != 0 {
				status = fmt.Sprint(*d.LastStatus)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", deref(d.DeliveryId), deref(d.EventId), d.Attempts, status, d.Reason)
		}
		_ = tw.Flush()
	}
	if r.BadSigs > 0 {
		fmt.Fprintf(w, "  WARNING: %d requests failed signature verification\n", r.BadSigs)
	}
	fmt.Fprintln(w, "\nPartner ROI (window 30 days, base currency):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PARTNER\tMODEL\tREVENUE\tCOST\tCONVERSIONS\tLEADS\tROI\tCPL\tCAC\tLTV")
	for _, row := range r.ROI {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", row.Partner, row.Model, row.Revenue, row.Cost,
			strconv.FormatFloat(row.Conversions, 'f', -1, 64), row.Leads, fptr(row.ROI), sptr(row.CPL), sptr(row.CAC), sptr(row.LTV))
	}
	_ = tw.Flush()
	if r.TraceID != "" {
		fmt.Fprintf(w, "\nTrace of one delivery (a retried one): trace_id %s (webhook-id %s)\n", r.TraceID, r.DeliveryID)
		fmt.Fprintf(w, "  find it in your tracing backend, or in ClickHouse, with trace_id for ?:\n    %s\n", strings.Join(strings.Fields(chsql.DeliveriesByTrace.SQL), " "))
	}
	if len(r.Tenants) > 0 {
		fmt.Fprintf(w, "\nThe three partners stay active to explore (`partners tenants get %s`, `partners dlq list --tenant %s`,\n"+
			"`partners roi`, the portal at /ui/ with a partner's key); their receivers ended with the demo, and the\n"+
			"next `partners demo` suspends them.\n", r.Tenants[0].ID, r.Tenants[len(r.Tenants)-1].ID)
	}
}

func fptr(p *float64) string {
	if p == nil {
		return "—"
	}
	return strconv.FormatFloat(*p, 'f', -1, 64) // as the API sent it, as `partners roi` prints it
}

func sptr(p *string) string {
	if p == nil {
		return "—"
	}
	return *p
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
