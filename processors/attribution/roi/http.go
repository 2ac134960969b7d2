package roi

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/httpx"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/schemas"
)

// Response is the body of GET /api/v1/analytics/roi.
type Response struct {
	WindowDays int    `json:"window_days"`
	From       string `json:"from"`
	To         string `json:"to"`
	Rows       []Row  `json:"rows"`
}

// HandlerOptions configure the HTTP handler.
type HandlerOptions struct {
	Conn          driver.Conn
	DefaultWindow int                                     // partner.attribution.roi_window_days
	TenantName    func(id string) (*schemas.Tenant, bool) // optional: fills partner_name
	Log           *slog.Logger
	Now           func() time.Time // nil: time.Now
}

// Handler serves GET /api/v1/analytics/roi?partner_id=&window=&model=. It is
// mounted behind adminapi's tenant auth with the admin token allowed: the
// admin sees any partner (all without partner_id); a tenant key sees only
// its own partner id (another one is 403).
func Handler(o HandlerOptions) http.HandlerFunc {
	if o.Now == nil {
		o.Now = time.Now
	}
	return func(w http.ResponseWriter, r *http.Request) {
		qs := r.URL.Query()
		q := Query{PartnerID: qs.Get("partner_id"), Model: qs.Get("model"), Window: o.DefaultWindow, AsOf: o.Now()}
		if s := qs.Get("window"); s != "" {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				bad(w, r, "window", "window must be an integer number of days")
				return
			}
			q.Window = n
		}
		if t, ok := authctx.TenantFrom(r.Context()); ok {
			if q.PartnerID == "" {
				q.PartnerID = t.ID
			} else if q.PartnerID != t.ID {
				problem.Error(w, r, http.StatusForbidden, "a partner key may only read its own ROI")
				return
			}
		}
		if err := q.Validate(); err != nil {
			field := "window"
			if strings.Contains(err.Error(), "model") {
				field = "model"
			}
			bad(w, r, field, strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": "))
			return
		}
		totals, err := Load(r.Context(), o.Conn, q, Rollups)
		if err != nil {
			if errors.Is(err, ErrBadRequest) {
				bad(w, r, "", err.Error())
				return
			}
			o.Log.Error("roi query failed", "err", err)
			problem.Error(w, r, http.StatusServiceUnavailable, "analytics store unavailable")
			return
		}
		from, to := q.Range()
		resp := Response{WindowDays: q.Window, From: from, To: to, Rows: make([]Row, 0, len(totals))}
		for _, t := range totals {
			row := Metrics(t)
			if o.TenantName != nil {
				if tn, ok := o.TenantName(t.PartnerID); ok {
					row.PartnerName = tn.Name
				}
			}
			resp.Rows = append(resp.Rows, row)
		}
		httpx.WriteJSON(w, http.StatusOK, resp)
	}
}

func bad(w http.ResponseWriter, r *http.Request, field, detail string) {
	d := problem.New(http.StatusBadRequest, detail)
	d.Field = field
	problem.Write(w, r, d)
}
