package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/schemas"
)

type tenantsData struct {
	Tenants    []*schemas.Tenant
	Q          string
	Status     string
	Total      int
	Tiers      []string
	EventTypes []string
	Statuses   []string
}

func (tenantsData) title() string { return "Tenants" }

func (s *Server) tenants(w http.ResponseWriter, r *http.Request, x *session) {
	q := r.URL.Query()
	d := tenantsData{Q: strings.TrimSpace(q.Get("q")), Status: q.Get("status"), Tiers: schemas.Tiers, EventTypes: s.opt.EventTypes,
		Statuses: []string{schemas.StatusActive, schemas.StatusSuspended, schemas.StatusPending}}
	all := s.opt.Tenants.List()
	d.Total = len(all)
	needle := strings.ToLower(d.Q)
	for _, t := range all {
		if d.Status != "" && t.Status != d.Status {
			continue
		}
		if needle != "" && !strings.Contains(strings.ToLower(t.Name), needle) && !strings.Contains(t.ID, needle) {
			continue
		}
		d.Tenants = append(d.Tenants, t)
		if len(d.Tenants) == 500 {
			break
		}
	}
	s.render(w, r, x, "tenants.html", d)
}

func (s *Server) onboard(w http.ResponseWriter, r *http.Request, x *session) {
	types, err := s.formEventTypes(r)
	if err != nil {
		s.fail(w, r, x, "Onboarding", err)
		return
	}
	c, err := s.opt.Admin.Create(r.Context(), Onboard{Name: strings.TrimSpace(r.PostFormValue("name")), Tier: r.PostFormValue("tier"),
		WebhookURL: strings.TrimSpace(r.PostFormValue("webhook_url")), Events: types})
	if err != nil {
		s.fail(w, r, x, "Onboarding", err)
		return
	}
	s.log.Info("tenant onboarded from the console", "tenant_id", c.Tenant.ID)
	s.render(w, r, x, "secret.html", secretData{Heading: "Partner onboarded", What: "API key", Value: c.APIKey,
		TenantID: c.Tenant.ID, TenantName: c.Tenant.Name, Extra: c, Back: Prefix + "console/tenants/" + c.Tenant.ID})
}

type tenantData struct {
	Tenant *schemas.Tenant
	Now    time.Time
}

func (d tenantData) title() string { return d.Tenant.Name }

func (s *Server) tenant(w http.ResponseWriter, r *http.Request, x *session) {
	t, ok := s.opt.Tenants.Get(r.PathValue("id"))
	if !ok {
		s.notFound(w, r, x)
		return
	}
	s.render(w, r, x, "tenant.html", tenantData{Tenant: t, Now: s.opt.Now()})
}

func (s *Server) tenantAction(w http.ResponseWriter, r *http.Request, x *session) {
	id := r.PathValue("id")
	t, ok := s.opt.Tenants.Get(id)
	if !ok {
		s.notFound(w, r, x)
		return
	}
	back := Prefix + "console/tenants/" + t.ID
	switch action := r.PathValue("action"); action {
	case "suspend", "activate":
		status := schemas.StatusSuspended
		if action == "activate" {
			status = schemas.StatusActive
		}
		if _, err := s.opt.Admin.SetStatus(r.Context(), t.ID, status); err != nil {
			s.fail(w, r, x, "Changing the status", err)
			return
		}
		if status == schemas.StatusSuspended {
			// The portal checks the status on every page anyway; this
			// also voids links not yet used.
			s.sess.dropTenant(t.ID)
			s.links.revokeTenant(t.ID)
		}
		s.log.Info("tenant status changed from the console", "tenant_id", t.ID, "status", status)
		s.back(w, r, x, back, "Tenant is now "+status+".", false)
	case "rotate-key":
		nt, key, err := s.opt.Admin.RotateKey(r.Context(), t.ID)
		if err != nil {
			s.fail(w, r, x, "Rotating the key", err)
			return
		}
		s.log.Info("API key rotated from the console", "tenant_id", t.ID)
		d := secretData{Heading: "New API key", What: "API key", Value: key, TenantID: t.ID, TenantName: t.Name, Back: back}
		for _, k := range nt.Keys {
			if !strings.HasPrefix(key, k.Prefix) || k.ExpiresAt != nil {
				d.Older = append(d.Older, overlap{ID: k.ID, Label: "key " + k.Prefix + "…", Expires: k.ExpiresAt})
			}
		}
		s.render(w, r, x, "secret.html", d)
	case "rotate-secret":
		ep := r.PostFormValue("endpoint")
		if ep != "" {
			if _, ok := endpointOf(t, ep); !ok {
				s.notFound(w, r, x)
				return
			}
		}
		nt, secret, err := s.opt.Admin.RotateSecret(r.Context(), t.ID, ep)
		if err != nil {
			s.fail(w, r, x, "Rotating the secret", err)
			return
		}
		s.log.Info("webhook secret rotated from the console", "tenant_id", t.ID, "endpoint_id", ep)
		d := secretData{Heading: "New webhook secret", What: "webhook secret", Value: secret, TenantID: t.ID, TenantName: t.Name,
			EndpointID: ep, Back: back}
		for _, e := range nt.Endpoints {
			if ep == "" || e.ID == ep {
				for _, o := range secretOverlap(e, secret) {
					o.Label = e.ID + " " + o.Label
					d.Older = append(d.Older, o)
				}
			}
		}
		s.render(w, r, x, "secret.html", d)
	case "portal-link":
		if t.Status != schemas.StatusActive {
			s.fail(w, r, x, "The portal link", fmt.Errorf("%w: the tenant is %s", ErrInvalid, t.Status))
			return
		}
		tok, exp := s.links.issue(t.ID)
		scheme := "http"
		if r.TLS != nil || s.opt.SecureCookies {
			scheme = "https"
		}
		s.log.Info("portal link issued", "tenant_id", t.ID, "expires", exp)
		s.render(w, r, x, "secret.html", secretData{Heading: "Portal link", What: "portal link",
			Value: scheme + "://" + r.Host + Prefix + "link/" + tok, TenantID: t.ID, TenantName: t.Name, LinkExpiry: exp, Back: back})
	default:
		s.notFound(w, r, x)
	}
}

func (s *Server) consoleDLQ(w http.ResponseWriter, r *http.Request, x *session) {
	tenant := r.URL.Query().Get("tenant")
	q, d, err := s.dlqQuery(r, tenant)
	d.Console, d.Tenant, d.Tenants = true, tenant, s.opt.Tenants.List()
	if tenant != "" {
		if t, ok := s.opt.Tenants.Get(tenant); ok {
			d.Endpoints = t.Endpoints
		}
	}
	s.listDLQ(w, r, x, q, d, err, "console_dlq.html")
}

func (s *Server) consoleReplay(w http.ResponseWriter, r *http.Request, x *session) {
	tenant := r.PostFormValue("tenant")
	q, _, err := s.dlqQuery(r, tenant)
	if err != nil {
		s.fail(w, r, x, "The replay", err)
		return
	}
	q.DeliveryIDs = r.PostForm["delivery_id"]
	back := Prefix + "console/dlq"
	if tenant != "" {
		back += "?tenant=" + url.QueryEscape(tenant)
	}
	s.replay(w, r, x, q, back)
}

type healthData struct {
	HealthReport
	Sessions int
	Tenants  map[string]string
}

func (healthData) title() string { return "Health" }

func (s *Server) health(w http.ResponseWriter, r *http.Request, x *session) {
	d := healthData{Sessions: s.sess.len(), Tenants: map[string]string{}}
	if s.opt.Health != nil {
		d.HealthReport = s.opt.Health.Health(r.Context())
	}
	slices.SortFunc(d.Breakers, func(a, b BreakerState) int { return strings.Compare(a.State+a.TenantName, b.State+b.TenantName) })
	s.render(w, r, x, "health.html", d)
}
