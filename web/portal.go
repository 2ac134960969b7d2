package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/schemas"
)

// Every portal handler takes the tenant from the session (x.tenantID) and
// checks that whatever the URL names (an endpoint, a delivery, a dead
// letter) belongs to it; anything else is "not found", the same answer as
// for an id that does not exist, so ids of other tenants cannot be probed.

func (s *Server) tenantOf(x *session) (*schemas.Tenant, bool) {
	return s.opt.Tenants.Get(x.tenantID)
}

func endpointOf(t *schemas.Tenant, id string) (schemas.Endpoint, bool) {
	for _, e := range t.Endpoints {
		if e.ID == id {
			return e, true
		}
	}
	return schemas.Endpoint{}, false
}

type portalHomeData struct {
	Endpoints, Enabled int
	Recent             []Delivery
	RecentErr          string
	Dead               int
	DeadMore           bool
	DeadErr            string
}

func (portalHomeData) title() string { return "Overview" }

func (s *Server) portalHome(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	d := portalHomeData{Endpoints: len(t.Endpoints)}
	for _, e := range t.Endpoints {
		if !e.Disabled {
			d.Enabled++
		}
	}
	now := s.opt.Now()
	rec, err := s.listDeliveries(r.Context(), DeliveryQuery{TenantID: t.ID, From: now.Add(-7 * 24 * time.Hour), To: now.Add(time.Minute), Limit: 5})
	d.Recent = rec
	if err != nil {
		d.RecentErr = userError(err)
	}
	if s.opt.DLQ != nil {
		dl, next, err := s.opt.DLQ.List(r.Context(), DLQQuery{TenantID: t.ID, Limit: 100})
		d.Dead, d.DeadMore = len(dl), next != ""
		if err != nil {
			d.DeadErr = userError(err)
		}
	}
	s.render(w, r, x, "portal_home.html", d)
}

// userError is what a page may say about a backend error.
func userError(err error) string {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInvalid) {
		return err.Error()
	}
	return "not available just now"
}

type endpointsData struct {
	Endpoints  []schemas.Endpoint
	EventTypes []string
	CanTest    bool
	Results    []TestResult
}

func (endpointsData) title() string { return "Endpoints" }

func (s *Server) endpoints(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	s.render(w, r, x, "endpoints.html", endpointsData{Endpoints: t.Endpoints, EventTypes: s.opt.EventTypes, CanTest: s.opt.Tester != nil})
}

// formEventTypes reads the event-type checkboxes; only configured types
// (or "*") are accepted.
func (s *Server) formEventTypes(r *http.Request) ([]string, error) {
	var out []string
	for _, e := range r.PostForm["event_types"] {
		if e != "*" && !slices.Contains(s.opt.EventTypes, e) {
			return nil, fmt.Errorf("%w: event type %q is not one of this system's event types", ErrInvalid, e)
		}
		out = append(out, e)
	}
	return out, nil
}

type secretData struct {
	Heading    string
	What       string // "webhook secret", "API key", "portal link"
	Value      string
	TenantID   string
	TenantName string
	EndpointID string
	Older      []overlap
	Back       string
	Extra      *Credentials
	LinkExpiry time.Time
}

func (d secretData) title() string { return d.Heading }

// overlap is a credential that stays valid for a while after a rotation.
type overlap struct {
	ID      string
	Label   string
	Expires *time.Time
}

func (s *Server) addEndpoint(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	types, err := s.formEventTypes(r)
	if err == nil {
		err = checkFilter(strings.TrimSpace(r.PostFormValue("filter")))
	}
	if err != nil {
		s.fail(w, r, x, "Adding the endpoint", err)
		return
	}
	before := map[string]bool{}
	for _, e := range t.Endpoints {
		before[e.ID] = true
	}
	nt, err := s.opt.Admin.SaveEndpoint(r.Context(), t.ID, EndpointChange{URL: strings.TrimSpace(r.PostFormValue("url")),
		EventTypes: types, Filter: strings.TrimSpace(r.PostFormValue("filter"))})
	if err != nil {
		s.fail(w, r, x, "Adding the endpoint", err)
		return
	}
	for _, e := range nt.Endpoints {
		if !before[e.ID] && len(e.Secrets) > 0 {
			s.log.Info("endpoint added from the portal", "tenant_id", t.ID, "endpoint_id", e.ID)
			s.render(w, r, x, "secret.html", secretData{Heading: "Endpoint added", What: "webhook secret",
				Value: e.Secrets[len(e.Secrets)-1].Secret, EndpointID: e.ID, Back: Prefix + "portal/endpoints/" + e.ID})
			return
		}
	}
	s.back(w, r, x, Prefix+"portal/endpoints", "Endpoint added.", false)
}

type endpointData struct {
	Endpoint   schemas.Endpoint
	EventTypes []string
	Now        time.Time
}

func (d endpointData) title() string { return "Endpoint " + d.Endpoint.ID }

func (s *Server) endpoint(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	e, ok := endpointOf(t, r.PathValue("id"))
	if !ok {
		s.notFound(w, r, x)
		return
	}
	s.render(w, r, x, "endpoint.html", endpointData{Endpoint: e, EventTypes: s.opt.EventTypes, Now: s.opt.Now()})
}

func (s *Server) saveEndpoint(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	e, ok := endpointOf(t, r.PathValue("id"))
	if !ok {
		s.notFound(w, r, x)
		return
	}
	types, err := s.formEventTypes(r)
	if err == nil {
		err = checkFilter(strings.TrimSpace(r.PostFormValue("filter")))
	}
	if err != nil {
		s.fail(w, r, x, "Saving the endpoint", err)
		return
	}
	if _, err := s.opt.Admin.SaveEndpoint(r.Context(), t.ID, EndpointChange{ID: e.ID, URL: strings.TrimSpace(r.PostFormValue("url")),
		EventTypes: types, Filter: strings.TrimSpace(r.PostFormValue("filter"))}); err != nil {
		s.fail(w, r, x, "Saving the endpoint", err)
		return
	}
	s.back(w, r, x, Prefix+"portal/endpoints/"+e.ID, "Endpoint saved.", false)
}

func (s *Server) setEndpointEnabled(enabled bool) handler {
	return func(w http.ResponseWriter, r *http.Request, x *session) {
		t, _ := s.tenantOf(x)
		e, ok := endpointOf(t, r.PathValue("id"))
		if !ok {
			s.notFound(w, r, x)
			return
		}
		disabled := !enabled
		if _, err := s.opt.Admin.SaveEndpoint(r.Context(), t.ID, EndpointChange{ID: e.ID, URL: e.URL, EventTypes: e.EventTypes,
			Filter: e.Filter, Disabled: &disabled}); err != nil {
			s.fail(w, r, x, "Changing the endpoint", err)
			return
		}
		msg := "Endpoint enabled."
		if disabled {
			msg = "Endpoint disabled: it receives nothing until you enable it."
		}
		s.back(w, r, x, Prefix+"portal/endpoints/"+e.ID, msg, false)
	}
}

func (s *Server) rotateEndpointSecret(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	e, ok := endpointOf(t, r.PathValue("id"))
	if !ok {
		s.notFound(w, r, x)
		return
	}
	nt, secret, err := s.opt.Admin.RotateSecret(r.Context(), t.ID, e.ID)
	if err != nil {
		s.fail(w, r, x, "Rotating the secret", err)
		return
	}
	s.log.Info("webhook secret rotated from the portal", "tenant_id", t.ID, "endpoint_id", e.ID)
	d := secretData{Heading: "New signing secret", What: "webhook secret", Value: secret, EndpointID: e.ID,
		Back: Prefix + "portal/endpoints/" + e.ID}
	if ne, ok := endpointOf(nt, e.ID); ok {
		d.Older = secretOverlap(ne, secret)
	}
	s.render(w, r, x, "secret.html", d)
}

// secretOverlap lists an endpoint's other secrets with when they stop signing.
func secretOverlap(e schemas.Endpoint, current string) []overlap {
	var out []overlap
	for _, sec := range e.Secrets {
		if sec.Secret != current {
			out = append(out, overlap{ID: sec.ID, Label: "secret " + sec.ID, Expires: sec.ExpiresAt})
		}
	}
	return out
}

func (s *Server) sendTest(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	if s.opt.Tester == nil {
		s.fail(w, r, x, "The test event", fmt.Errorf("%w: test events are sent by the webhooks processor, which this process does not run", ErrUnavailable))
		return
	}
	res, err := s.opt.Tester.Test(r.Context(), t)
	if err != nil {
		s.fail(w, r, x, "The test event", err)
		return
	}
	s.log.Info("test event sent from the portal", "tenant_id", t.ID, "endpoints", len(res))
	s.render(w, r, x, "endpoints.html", endpointsData{Endpoints: t.Endpoints, EventTypes: s.opt.EventTypes, CanTest: true, Results: res})
}

// --- deliveries ----------------------------------------------------------------

type deliveriesData struct {
	Items      []Delivery
	Err        string
	Status     string
	EventType  string
	Since      string
	Until      string
	Statuses   []string
	EventTypes []string
	Older      string // until= of the next page
}

func (deliveriesData) title() string { return "Deliveries" }

const formTime = "2006-01-02T15:04"

// parseFormTime reads a datetime-local value (UTC) or RFC 3339.
func parseFormTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{formTime, "2006-01-02T15:04:05", time.RFC3339} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: %q is not a time like 2025-01-31T14:00 (UTC)", ErrInvalid, v)
}

func (s *Server) deliveries(w http.ResponseWriter, r *http.Request, x *session) {
	q := r.URL.Query()
	d := deliveriesData{Status: q.Get("status"), EventType: q.Get("event_type"), Since: q.Get("since"), Until: q.Get("until"),
		Statuses: deliveryStatuses, EventTypes: s.opt.EventTypes}
	if d.Status != "" && !slices.Contains(deliveryStatuses, d.Status) {
		d.Status = ""
	}
	if d.EventType != "" && !slices.Contains(s.opt.EventTypes, d.EventType) {
		d.EventType = ""
	}
	now := s.opt.Now()
	from, err1 := parseFormTime(d.Since)
	to, err2 := parseFormTime(d.Until)
	if err := errors.Join(err1, err2); err != nil {
		d.Err = err.Error()
		s.renderStatus(w, r, x, http.StatusBadRequest, "deliveries.html", d)
		return
	}
	if from.IsZero() {
		from = now.Add(-7 * 24 * time.Hour)
	}
	if to.IsZero() {
		to = now.Add(time.Minute)
	}
	const limit = 50
	items, err := s.listDeliveries(r.Context(), DeliveryQuery{TenantID: x.tenantID, From: from, To: to, EventType: d.EventType, Status: d.Status, Limit: limit})
	if err != nil {
		d.Err = userError(err)
		if !errors.Is(err, ErrUnavailable) {
			s.log.Warn("deliveries not listed", "tenant_id", x.tenantID, "err", err)
		}
	}
	d.Items = items
	if len(items) == limit {
		d.Older = items[len(items)-1].LastAt.UTC().Format("2006-01-02T15:04:05")
	}
	s.render(w, r, x, "deliveries.html", d)
}

type deliveryData struct {
	ID       string
	Attempts []Attempt
	Dead     []DeadLetter
	Endpoint string
}

func (d deliveryData) title() string { return "Delivery " + d.ID }

func (s *Server) delivery(w http.ResponseWriter, r *http.Request, x *session) {
	id := r.PathValue("id")
	as, err := s.attempts(r.Context(), x.tenantID, id)
	if err != nil {
		s.fail(w, r, x, "Reading the delivery", err)
		return
	}
	d := deliveryData{ID: id, Attempts: as}
	if s.opt.DLQ != nil {
		d.Dead, _, _ = s.opt.DLQ.List(r.Context(), DLQQuery{TenantID: x.tenantID, DeliveryIDs: []string{id}, Limit: 10})
	}
	if len(as) == 0 && len(d.Dead) == 0 {
		s.notFound(w, r, x) // no such delivery of this tenant
		return
	}
	if len(as) > 0 {
		d.Endpoint = as[0].EndpointID
	}
	s.render(w, r, x, "delivery.html", d)
}

// --- dead letters --------------------------------------------------------------

// dlqStatuses are the states a dead letter can be listed by: waiting
// (dead), put back by a replay (replayed), delivered after one, dropped by
// the endpoint's filter after one, or any.
var dlqStatuses = []string{"dead", "replayed", "delivered", "dropped", "all"}

type dlqData struct {
	Items      []DeadLetter
	Status     string
	Statuses   []string
	Now        map[string]string // delivery id → latest outcome in the delivery log
	Err        string
	EventType  string
	Endpoint   string
	Since      string
	EventTypes []string
	Endpoints  []schemas.Endpoint
	Tenants    []*schemas.Tenant // console
	Tenant     string            // console filter
	Next       string
	Available  bool
	Console    bool
}

func (d dlqData) title() string {
	if d.Console {
		return "Dead letters (all tenants)"
	}
	return "Dead letters"
}

func (s *Server) dlqQuery(r *http.Request, tenantID string) (DLQQuery, dlqData, error) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		q = r.PostForm
	}
	d := dlqData{EventType: q.Get("event_type"), Endpoint: q.Get("endpoint"), Since: q.Get("since"), Status: q.Get("status"),
		EventTypes: s.opt.EventTypes, Statuses: dlqStatuses, Available: s.opt.DLQ != nil}
	since, err := parseFormTime(d.Since)
	if d.EventType != "" && !slices.Contains(s.opt.EventTypes, d.EventType) {
		err = errors.Join(err, fmt.Errorf("%w: unknown event type %q", ErrInvalid, d.EventType))
	}
	if d.Status != "" && !slices.Contains(dlqStatuses, d.Status) {
		err = errors.Join(err, fmt.Errorf("%w: unknown dead-letter state %q", ErrInvalid, d.Status))
	}
	return DLQQuery{TenantID: tenantID, EventType: d.EventType, EndpointID: d.Endpoint, Since: since, Status: d.Status, Limit: 100,
		PageToken: q.Get("page")}, d, err
}

func (s *Server) portalDLQ(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	q, d, err := s.dlqQuery(r, t.ID)
	d.Endpoints = t.Endpoints
	if d.Endpoint != "" {
		if _, ok := endpointOf(t, d.Endpoint); !ok {
			s.notFound(w, r, x)
			return
		}
	}
	s.listDLQ(w, r, x, q, d, err, "portal_dlq.html")
}

func (s *Server) listDLQ(w http.ResponseWriter, r *http.Request, x *session, q DLQQuery, d dlqData, err error, page string) {
	if err != nil {
		d.Err = err.Error()
		s.renderStatus(w, r, x, http.StatusBadRequest, page, d)
		return
	}
	if s.opt.DLQ == nil {
		s.render(w, r, x, page, d)
		return
	}
	items, next, err := s.opt.DLQ.List(r.Context(), q)
	if err != nil {
		d.Err = userError(err)
		s.log.Warn("DLQ not listed", "tenant_id", q.TenantID, "err", err)
	}
	d.Items, d.Next = items, next
	ids := make([]string, 0, len(items))
	for _, it := range items {
		if it.DeliveryID != "" {
			ids = append(ids, it.DeliveryID)
		}
	}
	d.Now = s.deliveryStatus(r.Context(), q.TenantID, ids)
	s.render(w, r, x, page, d)
}

func (s *Server) portalReplay(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	q, _, err := s.dlqQuery(r, t.ID)
	if err != nil {
		s.fail(w, r, x, "The replay", err)
		return
	}
	if q.EndpointID != "" {
		if _, ok := endpointOf(t, q.EndpointID); !ok {
			s.notFound(w, r, x)
			return
		}
	}
	q.DeliveryIDs = r.PostForm["delivery_id"]
	s.replay(w, r, x, q, Prefix+"portal/dlq")
}

func (s *Server) replay(w http.ResponseWriter, r *http.Request, x *session, q DLQQuery, back string) {
	if s.opt.DLQ == nil {
		s.fail(w, r, x, "The replay", fmt.Errorf("%w: the DLQ belongs to the webhooks processor, which this process cannot reach", ErrUnavailable))
		return
	}
	q.Limit, q.PageToken = 0, ""
	n, err := s.opt.DLQ.Replay(r.Context(), q)
	if err != nil {
		s.fail(w, r, x, "The replay", err)
		return
	}
	s.log.Info("DLQ replayed from the UI", "tenant_id", q.TenantID, "by", x.kind, "replayed", n)
	msg := fmt.Sprintf("Replayed %d dead letter(s): they are being delivered again.", n)
	if n == 0 {
		msg = "Nothing to replay: no dead letter matches."
	}
	s.back(w, r, x, back, msg, false)
}

func (s *Server) portalRecover(w http.ResponseWriter, r *http.Request, x *session) {
	t, _ := s.tenantOf(x)
	e, ok := endpointOf(t, r.PostFormValue("endpoint"))
	if !ok {
		s.notFound(w, r, x)
		return
	}
	since, err := parseFormTime(r.PostFormValue("since"))
	if err == nil && since.IsZero() {
		err = fmt.Errorf("%w: give the time to recover from", ErrInvalid)
	}
	if err != nil {
		s.fail(w, r, x, "The recovery", err)
		return
	}
	if s.opt.DLQ == nil {
		s.fail(w, r, x, "The recovery", fmt.Errorf("%w: the DLQ belongs to the webhooks processor, which this process cannot reach", ErrUnavailable))
		return
	}
	n, err := s.opt.DLQ.Recover(r.Context(), t.ID, e.ID, since)
	if err != nil {
		s.fail(w, r, x, "The recovery", err)
		return
	}
	s.log.Info("endpoint recovered from the portal", "tenant_id", t.ID, "endpoint_id", e.ID, "redelivered", n)
	s.back(w, r, x, Prefix+"portal/dlq", fmt.Sprintf("Recovering %s since %s: %d failed deliveries are being delivered again.",
		e.ID, since.Format(time.RFC3339), n), false)
}

// --- ROI -------------------------------------------------------------------

type roiData struct {
	Window    int
	Windows   []int
	Available bool
	Err       string
	Report    *ROIReport
	ROIChart  template.HTML
	RevChart  template.HTML
	Models    []string
	Days      []roiRow
}

type roiRow struct {
	Day    time.Time
	Values []ROIDay // per model, in Models order
}

func (roiData) title() string { return "ROI" }

func (s *Server) roiPage(w http.ResponseWriter, r *http.Request, x *session) {
	d := roiData{Window: 30, Windows: []int{7, 30, 90}, Available: s.opt.ROI != nil}
	if v, err := strconv.Atoi(r.URL.Query().Get("window")); err == nil && slices.Contains(d.Windows, v) {
		d.Window = v
	}
	if s.opt.ROI == nil {
		s.render(w, r, x, "roi.html", d)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	rep, err := s.opt.ROI.Report(ctx, x.tenantID, d.Window)
	if err != nil {
		d.Err = userError(err)
		s.log.Warn("ROI not read", "tenant_id", x.tenantID, "err", err)
		s.render(w, r, x, "roi.html", d)
		return
	}
	d.Report = rep
	buildROICharts(&d)
	s.render(w, r, x, "roi.html", d)
}

// buildROICharts turns the daily rows into two charts: the ROI to date of
// each model (cumulative revenue and cost up to each day), and attributed
// revenue per day per model beside the day's cost.
func buildROICharts(d *roiData) {
	rep := d.Report
	var days []time.Time
	for t := rep.From; !t.After(rep.To); t = t.AddDate(0, 0, 1) {
		days = append(days, t)
	}
	idx := map[string]int{}
	for i, t := range days {
		idx[t.Format(time.DateOnly)] = i
	}
	for _, t := range rep.Totals {
		d.Models = append(d.Models, t.Model)
	}
	byModel := map[string][]ROIDay{}
	for _, m := range d.Models {
		byModel[m] = make([]ROIDay, len(days))
	}
	for _, r := range rep.Daily {
		if i, ok := idx[r.Day.Format(time.DateOnly)]; ok && byModel[r.Model] != nil {
			byModel[r.Model][i] = r
		}
	}
	var roiSeries, revSeries []series
	cost := make([]float64, len(days))
	for _, m := range d.Models {
		cum := make([]float64, len(days))
		rev := make([]float64, len(days))
		var sumRev, sumCost float64
		for i, r := range byModel[m] {
			sumRev += r.Revenue
			sumCost += r.Cost
			rev[i] = r.Revenue
			cost[i] = r.Cost
			cum[i] = math.NaN()
			if sumCost > 0 {
				cum[i] = (sumRev - sumCost) / sumCost
			}
		}
		roiSeries = append(roiSeries, series{Name: m, Values: cum})
		revSeries = append(revSeries, series{Name: m, Values: rev})
	}
	revSeries = append(revSeries, series{Name: "cost", Values: cost})
	ratio := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	d.ROIChart = lineChart("ROI to date by attribution model", "ROI to date", days, roiSeries, ratio)
	d.RevChart = lineChart("Attributed revenue per day by model, and cost", "Revenue and cost per day", days, revSeries, ratio)
	for i := len(days) - 1; i >= 0; i-- {
		row := roiRow{Day: days[i]}
		any := false
		for _, m := range d.Models {
			v := byModel[m][i]
			row.Values = append(row.Values, v)
			if v.Revenue != 0 || v.Cost != 0 || v.Leads != 0 || v.Conversions != 0 {
				any = true
			}
		}
		if any {
			d.Days = append(d.Days, row)
		}
	}
}
