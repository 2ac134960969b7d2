package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/processors/webhooks"
	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/web"
)

// The web UI (package web) reads and changes the system through small
// interfaces; this file implements them with the components of the
// process: the tenant registry and writer, the webhooks processor's DLQ and
// test delivery (dev), or the webhooks process's admin API
// (control-plane, ui.webhooks_api), roi.Load, and the process's own
// metrics and checks for the health page.

// addUI builds the UI and its handler. In control-plane mode ClickHouse is
// opened in the background: the control plane must start (and serve xDS)
// while ClickHouse is down; the delivery and ROI pages say so until then.
func (p *process) addUI() error {
	if !p.cfg.UI.Enabled {
		p.handlers["ui"] = func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "the web UI is disabled (ui.enabled: false)", http.StatusNotFound)
		}
		return nil
	}
	ch := &uiClickHouse{}
	if p.ch != nil {
		ch.conn.Store(&p.ch)
	} else {
		p.add("ui-clickhouse", ch.open(p))
	}
	opt := web.Options{
		AdminToken: p.cfg.Admin.Token, Pepper: p.cfg.Partner.Keys.Pepper,
		Tenants: p.reg, Admin: uiWriter{w: p.writer, reg: p.reg},
		ClickHouse: ch.get, EventTypes: p.cfg.Partner.Webhooks.EventTypes,
		SessionIdle: p.cfg.UI.SessionIdle, SessionMax: p.cfg.UI.SessionMax, LinkTTL: p.cfg.UI.PortalLinkTTL,
		SecureCookies: p.cfg.UI.SecureCookies, Log: p.log,
		ROI:    uiROI{ch: ch},
		Health: &uiHealth{p: p, ch: ch},
	}
	switch {
	case p.webhooks != nil:
		opt.DLQ = uiDLQ{p: p.webhooks}
		opt.Tester = uiTester{p: p.webhooks}
	case p.cfg.UI.WebhooksAPI != "":
		opt.DLQ = &uiRemoteDLQ{base: strings.TrimRight(p.cfg.UI.WebhooksAPI, "/"), token: p.cfg.Admin.Token,
			client: &http.Client{Timeout: 60 * time.Second}}
	}
	ui, err := web.New(opt)
	if err != nil {
		return err
	}
	p.handlers["ui"] = ui.ServeHTTP
	p.say("web UI (partner portal, console)", "http://"+p.r.Addr(ListenAdmin)+web.Prefix)
	return nil
}

// uiClickHouse is the UI's connection, set once it is open.
type uiClickHouse struct {
	conn atomic.Pointer[driver.Conn]
}

func (c *uiClickHouse) get() driver.Conn {
	if p := c.conn.Load(); p != nil {
		return *p
	}
	return nil
}

// open connects in the background, every 10 s until it works (the UI only
// reads: no migrations from here), and closes the connection at the end.
func (c *uiClickHouse) open(p *process) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		for {
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			conn, err := chdb.Open(cctx, p.cfg.ClickHouse)
			cancel()
			if err == nil {
				c.conn.Store(&conn)
				<-ctx.Done()
				c.conn.Store(nil)
				return conn.Close()
			}
			p.log.Warn("web UI: ClickHouse unavailable; retrying in 10s", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// uiError maps registry errors to the UI's kinds, keeping their message.
func uiError(err error) error {
	var fe *registry.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return fmt.Errorf("%w: %s", web.ErrInvalid, fe.Error())
	case errors.Is(err, registry.ErrInvalid):
		return fmt.Errorf("%w: %s", web.ErrInvalid, strings.TrimPrefix(err.Error(), "invalid: "))
	case errors.Is(err, registry.ErrConflict):
		return fmt.Errorf("%w: %s", web.ErrConflict, strings.TrimPrefix(err.Error(), "conflict: "))
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("%w: %s", web.ErrNotFound, err.Error())
	}
	return err
}

// uiWriter is the registry writer as the UI uses it.
type uiWriter struct {
	w   *registry.Writer
	reg *registry.Registry
}

func (u uiWriter) Create(ctx context.Context, o web.Onboard) (*web.Credentials, error) {
	c, err := u.w.Create(ctx, registry.CreateRequest{Name: o.Name, Tier: o.Tier, WebhookURL: o.WebhookURL, Events: o.Events})
	if err != nil {
		return nil, uiError(err)
	}
	return &web.Credentials{Tenant: c.Tenant, APIKey: c.APIKey, WebhookSecret: c.WebhookSecret}, nil
}

// SaveEndpoint patches one endpoint; the fields the UI does not edit
// (payload mapping and version) are carried over.
func (u uiWriter) SaveEndpoint(ctx context.Context, tenantID string, e web.EndpointChange) (*schemas.Tenant, error) {
	ep := registry.EndpointPatch{ID: e.ID, URL: e.URL, EventTypes: e.EventTypes, Filter: e.Filter, Disabled: e.Disabled}
	if e.ID != "" {
		t, ok := u.reg.Get(tenantID)
		if !ok {
			return nil, fmt.Errorf("%w: tenant %s", web.ErrNotFound, tenantID)
		}
		i := slices.IndexFunc(t.Endpoints, func(x schemas.Endpoint) bool { return x.ID == e.ID })
		if i < 0 {
			return nil, fmt.Errorf("%w: endpoint %s", web.ErrNotFound, e.ID)
		}
		ep.Mapping, ep.PayloadVersion = t.Endpoints[i].Mapping, t.Endpoints[i].SchemaVersion
	}
	t, err := u.w.Update(ctx, tenantID, registry.Patch{Endpoints: []registry.EndpointPatch{ep}})
	return t, uiError(err)
}

func (u uiWriter) SetStatus(ctx context.Context, tenantID, status string) (*schemas.Tenant, error) {
	t, err := u.w.SetStatus(ctx, tenantID, status)
	return t, uiError(err)
}

func (u uiWriter) RotateKey(ctx context.Context, tenantID string) (*schemas.Tenant, string, error) {
	t, k, err := u.w.RotateKey(ctx, tenantID)
	return t, k, uiError(err)
}

func (u uiWriter) RotateSecret(ctx context.Context, tenantID, endpointID string) (*schemas.Tenant, string, error) {
	t, s, err := u.w.RotateSecret(ctx, tenantID, endpointID)
	return t, s, uiError(err)
}

// uiDLQ is the in-process webhooks processor's DLQ index, replay and
// recovery (dev).
type uiDLQ struct {
	p *webhooks.Processor
}

func (d uiDLQ) filter(q web.DLQQuery) webhooks.DLQFilter {
	return webhooks.DLQFilter{Tenant: q.TenantID, Endpoint: q.EndpointID, EventType: q.EventType, Since: q.Since,
		DeliveryIDs: q.DeliveryIDs, Status: q.Status, Limit: q.Limit, PageToken: q.PageToken}
}

func (d uiDLQ) List(ctx context.Context, q web.DLQQuery) ([]web.DeadLetter, string, error) {
	es, next, err := d.p.ListDLQ(ctx, d.filter(q))
	if errors.Is(err, webhooks.ErrBadPageToken) {
		return nil, "", fmt.Errorf("%w: that page no longer exists; start from the first page", web.ErrInvalid)
	}
	if err != nil {
		return nil, "", err
	}
	out := make([]web.DeadLetter, 0, len(es))
	for _, e := range es {
		out = append(out, web.DeadLetter{DeliveryID: e.DeliveryID, TenantID: e.TenantID, EndpointID: e.EndpointID, EventID: e.EventID,
			EventType: e.EventType, Attempts: e.Attempts, LastStatus: e.LastStatus, LastError: e.LastError, Reason: e.Reason,
			ReasonCode: e.ReasonCode, Status: e.Status, TraceID: e.TraceID, DeadAt: e.DeadAt, LastAttemptAt: e.LastAttemptAt,
			Replayable: e.Replayable() && e.Status == "dead"})
	}
	return out, next, nil
}

func (d uiDLQ) Replay(ctx context.Context, q web.DLQQuery) (int, error) {
	q.Limit, q.PageToken = 0, ""
	res, err := d.p.Replay(ctx, webhooks.ReplayRequest{Filter: d.filter(q)})
	return res.Replayed, err
}

func (d uiDLQ) Recover(ctx context.Context, _ string, endpointID string, since time.Time) (int, error) {
	res, err := d.p.Recover(ctx, endpointID, since)
	switch {
	case errors.Is(err, webhooks.ErrUnknownEndpoint):
		return 0, fmt.Errorf("%w: %s", web.ErrNotFound, err.Error())
	case errors.Is(err, webhooks.ErrEndpointState):
		return 0, fmt.Errorf("%w: %s", web.ErrInvalid, err.Error())
	}
	return res.Replayed, err
}

// uiTester sends test events through the in-process processor.
type uiTester struct{ p *webhooks.Processor }

func (u uiTester) Test(ctx context.Context, t *schemas.Tenant) ([]web.TestResult, error) {
	var out []web.TestResult
	for _, r := range u.p.TestDelivery(ctx, t) {
		out = append(out, web.TestResult{EndpointID: r.EndpointID, Outcome: r.Outcome, StatusCode: r.StatusCode, Error: r.Error, LatencyMS: r.LatencyMS})
	}
	return out, nil
}

// uiRemoteDLQ is the DLQ of the webhooks process, through its admin API
// (control-plane mode, ui.webhooks_api) with the admin token.
type uiRemoteDLQ struct {
	base, token string
	client      *http.Client
}

func (d *uiRemoteDLQ) call(ctx context.Context, method, path string, q url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, d.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := d.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhooks API (ui.webhooks_api): %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if resp.StatusCode != http.StatusOK {
		var pb struct {
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(b, &pb)
		if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w: %s", web.ErrInvalid, pb.Detail)
		}
		return fmt.Errorf("webhooks API %s %s: %d %s", method, path, resp.StatusCode, pb.Detail)
	}
	return json.Unmarshal(b, out)
}

func remoteQuery(q web.DLQQuery) url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("tenant", q.TenantID)
	set("endpoint", q.EndpointID)
	set("event_type", q.EventType)
	set("status", q.Status)
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339))
	}
	for _, id := range q.DeliveryIDs {
		v.Add("delivery_id", id)
	}
	return v
}

func (d *uiRemoteDLQ) List(ctx context.Context, q web.DLQQuery) ([]web.DeadLetter, string, error) {
	v := remoteQuery(q)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.PageToken != "" {
		v.Set("page_token", q.PageToken)
	}
	var body struct {
		DeadLetters []struct {
			DeliveryID    string    `json:"delivery_id"`
			TenantID      string    `json:"tenant_id"`
			EndpointID    string    `json:"endpoint_id"`
			EventID       string    `json:"event_id"`
			EventType     string    `json:"event_type"`
			Attempts      int       `json:"attempts"`
			LastStatus    int       `json:"last_status"`
			LastError     string    `json:"last_error"`
			Reason        string    `json:"reason"`
			ReasonCode    string    `json:"reason_code"`
			Status        string    `json:"status"`
			TraceID       string    `json:"trace_id"`
			LastAttemptAt time.Time `json:"last_attempt_at"`
			DeadAt        time.Time `json:"dead_at"`
		} `json:"dead_letters"`
		Next string `json:"next_page_token"`
	}
	if err := d.call(ctx, http.MethodGet, "/api/v1/dlq", v, &body); err != nil {
		return nil, "", err
	}
	var out []web.DeadLetter
	for _, e := range body.DeadLetters {
		if q.TenantID != "" && e.TenantID != q.TenantID {
			continue // the portal's tenant only, whatever the other side answered
		}
		dead := e.DeadAt
		if dead.IsZero() {
			dead = e.LastAttemptAt
		}
		out = append(out, web.DeadLetter{DeliveryID: e.DeliveryID, TenantID: e.TenantID, EndpointID: e.EndpointID, EventID: e.EventID,
			EventType: e.EventType, Attempts: e.Attempts, LastStatus: e.LastStatus, LastError: e.LastError, Reason: e.Reason,
			ReasonCode: e.ReasonCode, Status: e.Status, TraceID: e.TraceID, DeadAt: dead, LastAttemptAt: e.LastAttemptAt,
			// The API does not say whether the payload was kept; the
			// webhooks process skips (and counts) one it cannot replay.
			Replayable: e.Status == "dead" && e.DeliveryID != "" && e.EndpointID != "" && e.TenantID != ""})
	}
	return out, body.Next, nil
}

func (d *uiRemoteDLQ) Replay(ctx context.Context, q web.DLQQuery) (int, error) {
	if q.TenantID == "" && q.EndpointID == "" && q.EventType == "" && q.Since.IsZero() && len(q.DeliveryIDs) == 0 {
		// Never an unfiltered replay from a form: the console posts its filter.
		return 0, fmt.Errorf("%w: choose a tenant, event type or time to replay", web.ErrInvalid)
	}
	var body struct {
		Replayed int `json:"replayed"`
	}
	err := d.call(ctx, http.MethodPost, "/api/v1/dlq/replay", remoteQuery(q), &body)
	return body.Replayed, err
}

func (d *uiRemoteDLQ) Recover(ctx context.Context, _ string, endpointID string, since time.Time) (int, error) {
	var body struct {
		Replayed  int `json:"replayed"`
		Recovered int `json:"recovered"`
	}
	v := url.Values{"endpoint": {endpointID}, "since": {since.UTC().Format(time.RFC3339)}}
	if err := d.call(ctx, http.MethodPost, "/api/v1/dlq/recover", v, &body); err != nil {
		return 0, err
	}
	return max(body.Replayed, body.Recovered), nil
}

// uiROI reads a partner's ROI with roi.Load: the window's totals, and each
// day of it as a one-day window (the same statements and de-duplication as
// the API; 3 queries a day, a few at a time).
type uiROI struct{ ch *uiClickHouse }

func roiDay(t roi.Totals, day time.Time) web.ROIDay {
	m := roi.Metrics(t)
	return web.ROIDay{Day: day, Model: t.Model, Revenue: t.Revenue.InexactFloat64(), Cost: t.Cost.InexactFloat64(),
		Conversions: t.Conversions.InexactFloat64(), Leads: t.Leads, NewCustomers: t.NewCustomers.InexactFloat64(),
		Customers: t.Customers, ROI: m.ROI, CPL: m.CPL, CAC: m.CAC, LTV: m.LTV}
}

func (u uiROI) Report(ctx context.Context, partnerID string, days int) (*web.ROIReport, error) {
	conn := u.ch.get()
	if conn == nil {
		return nil, fmt.Errorf("%w: ClickHouse is not reachable from this process yet", web.ErrUnavailable)
	}
	now := time.Now().UTC()
	q := roi.Query{PartnerID: partnerID, Window: days, AsOf: now}
	from, to := q.Range()
	rep := &web.ROIReport{}
	rep.From, _ = time.Parse(time.DateOnly, from)
	rep.To, _ = time.Parse(time.DateOnly, to)
	totals, err := roi.Load(ctx, conn, q, roi.Rollups)
	if err != nil {
		return nil, err
	}
	for _, t := range totals {
		rep.Totals = append(rep.Totals, roiDay(t, time.Time{}))
	}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	for d := rep.From; !d.After(rep.To); d = d.AddDate(0, 0, 1) {
		wg.Add(1)
		sem <- struct{}{}
		go func(day time.Time) {
			defer func() { <-sem; wg.Done() }()
			ts, err := roi.Load(ctx, conn, roi.Query{PartnerID: partnerID, Window: 1, AsOf: day}, roi.Rollups)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			for _, t := range ts {
				rep.Daily = append(rep.Daily, roiDay(t, day))
			}
		}(d)
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	slices.SortFunc(rep.Daily, func(a, b web.ROIDay) int { return a.Day.Compare(b.Day) })
	return rep, nil
}

// uiHealth builds the health page from what this process runs.
type uiHealth struct {
	p  *process
	ch *uiClickHouse
}

func (h *uiHealth) Health(ctx context.Context) web.HealthReport {
	p := h.p
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var rep web.HealthReport
	check := func(name string, err error, ok string) {
		c := web.HealthCheck{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			c.Detail = err.Error()
		}
		rep.Checks = append(rep.Checks, c)
	}
	vs, err := kadm.NewClient(p.producer).ApiVersions(ctx)
	detail := fmt.Sprintf("brokers %v", p.brokers)
	if err == nil {
		for _, v := range vs {
			if v.Err != nil {
				err = v.Err
			}
		}
	}
	check("kafka", err, detail)
	select {
	case <-p.reg.Ready():
		check("tenant registry", nil, fmt.Sprintf("%d tenants", p.reg.Len()))
	default:
		check("tenant registry", errors.New("loading the tenants topic"), "")
	}
	if conn := h.ch.get(); conn != nil {
		err := conn.Ping(ctx)
		v, _ := chdb.ServerVersion(ctx, conn)
		check("clickhouse", err, "ClickHouse "+v)
	} else {
		check("clickhouse", errors.New("not connected yet"), "")
	}
	// Consumer lag: the process's own lag monitor (partners_kafka_consumer_lag).
	if mfs, err := p.prom.Gather(); err == nil {
		for _, mf := range mfs {
			if mf.GetName() != "partners_kafka_consumer_lag" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := web.Lag{Lag: int64(m.GetGauge().GetValue())}
				for _, lp := range m.GetLabel() {
					switch lp.GetName() {
					case "group":
						l.Group = lp.GetValue()
					case "topic":
						l.Topic = lp.GetValue()
					}
				}
				rep.Lag = append(rep.Lag, l)
			}
		}
	}
	slices.SortFunc(rep.Lag, func(a, b web.Lag) int { return strings.Compare(a.Group+a.Topic, b.Group+b.Topic) })
	if x := p.xdsServer(); x != nil {
		for _, r := range p.cfg.RegionNames() {
			rep.XDS = append(rep.XDS, web.XDSVersion{Region: r, Version: x.Version(r)})
		}
	} else if p.r.opt.Mode == Dev || p.r.opt.Mode == ControlPlane {
		rep.Notes = append(rep.Notes, "The xDS server has not started yet (it waits for the tenant registry).")
	}
	if p.webhooks != nil {
		states := p.webhooks.BreakerStates() // endpoints with recent traffic; the others are closed
		for _, t := range p.reg.List() {
			for _, e := range t.Endpoints {
				if st, ok := states[e.ID]; ok && len(rep.Breakers) < 500 {
					rep.Breakers = append(rep.Breakers, web.BreakerState{TenantID: t.ID, TenantName: t.Name, EndpointID: e.ID, State: st})
				}
			}
		}
		if len(rep.Breakers) == 0 {
			rep.Notes = append(rep.Notes, "No endpoint had traffic recently: every breaker is closed.")
		}
	} else {
		rep.Notes = append(rep.Notes, "Circuit breakers live in the webhooks processor (partners webhooks): see its /metrics.")
	}
	return rep
}

// xdsServer is the control plane's xDS server once it runs.
func (p *process) xdsServer() *xds.Server {
	p.xdsMu.Lock()
	defer p.xdsMu.Unlock()
	return p.xds
}
