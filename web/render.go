package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/schemas"
)

// page is what every template gets: the layout's fields and the page's data.
type page struct {
	Title    string
	Kind     string // session kind: partner, operator or "" (signed out)
	Tenant   *schemas.Tenant
	Via      string
	CSRF     string
	Flash    string
	FlashErr bool
	Nav      string // the current section, for aria-current
	Page     string // the template's name without .html (body data-page, for tests and styles)
	Data     any
}

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
	},
	"tsp": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
	},
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"ms": func(f float64) string { return fmt.Sprintf("%.1f ms", f) },
	"money": func(f float64) string {
		return fmt.Sprintf("%.2f", f)
	},
	"opt": func(s *string) string {
		if s == nil {
			return "—"
		}
		return *s
	},
	"ratio": func(f *float64) string {
		if f == nil {
			return "—"
		}
		return fmt.Sprintf("%.2f", *f)
	},
	"join": strings.Join,
	"dict_types": func(all, selected []string) map[string][]string {
		return map[string][]string{"all": all, "selected": selected}
	},
	"has": func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	},
	"query": func(kv ...string) template.URL {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" {
				v.Set(kv[i], kv[i+1])
			}
		}
		return template.URL(v.Encode())
	},
}

func parseTemplates() (map[string]*template.Template, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || base == "partials.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", base, err)
		}
		out[base] = t
	}
	return out, nil
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, x *session, name string, data any) {
	s.renderStatus(w, r, x, http.StatusOK, name, data)
}

// renderStatus renders name into the layout. A partner's page gets its
// tenant from the session, never from the request.
func (s *Server) renderStatus(w http.ResponseWriter, r *http.Request, x *session, status int, name string, data any) {
	t, ok := s.pages[name]
	if !ok {
		http.Error(w, "no such page", http.StatusInternalServerError)
		return
	}
	p := page{Data: data, Title: titleOf(data), Nav: navOf(r.URL.Path), Page: strings.TrimSuffix(name, ".html")}
	if x != nil {
		p.CSRF = x.csrf
		if x.kind != kindAnon {
			p.Kind = x.kind
			p.Flash, p.FlashErr = s.sess.takeFlash(x)
		}
		if x.kind == kindPartner {
			p.Tenant, _ = s.opt.Tenants.Get(x.tenantID)
			p.Via = x.via
		}
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		s.log.Error("render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// titled is page data that names its page.
type titled interface{ title() string }

func titleOf(d any) string {
	if t, ok := d.(titled); ok {
		return t.title()
	}
	switch d.(type) {
	case loginPage:
		return "Sign in"
	case linkPageData:
		return "Portal link"
	}
	return "partners-engine"
}

func navOf(p string) string {
	rest := strings.TrimPrefix(p, Prefix)
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) >= 2 {
		if parts[1] == "" {
			return parts[0]
		}
		return parts[0] + "/" + parts[1]
	}
	return rest
}

type errorPage struct {
	Title   string
	Message string
}

func (e errorPage) title() string { return e.Title }

func (s *Server) notFound(w http.ResponseWriter, r *http.Request, x *session) {
	s.renderStatus(w, r, x, http.StatusNotFound, "error.html", errorPage{Title: "Not found",
		Message: "There is no such page, or it is not yours to see."})
}

// fail shows err: a user's mistake as a 400 with its message, an
// unavailable feature as 503, anything else as 502 (details in the log).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, x *session, what string, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		s.notFound(w, r, x)
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrConflict):
		s.renderStatus(w, r, x, http.StatusBadRequest, "error.html", errorPage{Title: what + " failed", Message: err.Error()})
	case errors.Is(err, ErrUnavailable):
		s.renderStatus(w, r, x, http.StatusServiceUnavailable, "error.html", errorPage{Title: what + " unavailable", Message: err.Error()})
	default:
		s.log.Warn("page failed", "what", what, "path", r.URL.Path, "err", err)
		s.renderStatus(w, r, x, http.StatusBadGateway, "error.html", errorPage{Title: what + " failed",
			Message: "The system could not do that just now. Try again in a moment."})
	}
}

// back redirects to the page a form came from (a path of the UI, never an
// absolute URL), with a flash message.
func (s *Server) back(w http.ResponseWriter, r *http.Request, x *session, to, msg string, isErr bool) {
	if msg != "" {
		s.sess.setFlash(x, msg, isErr)
	}
	if !strings.HasPrefix(to, Prefix) || strings.HasPrefix(to, "//") || strings.Contains(to, "\\") {
		to = Prefix
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// tenantByKey finds the tenant of an API key and which of its keys it is.
func (s *Server) tenantByKey(key string) (*schemas.Tenant, string, bool) {
	if !apikey.LooksValid(key) {
		return nil, "", false
	}
	h := apikey.Hash(s.opt.Pepper, key)
	t, ok := s.opt.Tenants.ByKeyHash(h, s.opt.Now())
	if !ok {
		return nil, "", false
	}
	for _, k := range t.Keys {
		if apikey.Equal(k.Hash, h) {
			return t, k.ID, true
		}
	}
	return nil, "", false
}
