// Package routes is the one table of partners-engine's HTTP routes: every
// route of the admin/analytics listener (listeners.admin), the set it
// belongs to, the credential it takes, its OpenAPI operationId, and which
// set each process mode serves. internal/runner mounts exactly these; a
// route not in a mode's sets answers 404 in that process. The table is data
// only (no imports), so the admin API's tests can mount a set too.
package routes

// Mode is a process mode: a `partners` subcommand that runs components.
type Mode string

// The modes.
const (
	Dev          Mode = "dev"           // everything in one process
	ControlPlane Mode = "control-plane" // xDS and the tenant admin API
	Edge         Mode = "edge"          // the ext_authz plugin
	Webhooks     Mode = "webhooks"      // fan-out, retries, DLQ, delivery log
	Attribution  Mode = "attribution"   // Kafka → ClickHouse, ROI
)

// Modes lists every mode.
var Modes = []Mode{Dev, ControlPlane, Edge, Webhooks, Attribution}

// Set is a group of routes served together, by the process that owns them.
type Set string

// The route sets.
const (
	Ops         Set = "ops"          // probes and metrics: every process
	Tenants     Set = "tenants"      // tenant admin API: the control plane (writes go to the tenants topic)
	DLQ         Set = "dlq"          // webhooks DLQ list, replay and recover: the webhooks processor's process
	WebhookTest Set = "webhook-test" // a partner's test delivery: the webhooks processor's process
	Analytics   Set = "analytics"    // partner ROI: the attribution processor's process
	UI          Set = "ui"           // the partner portal and operator console (web/): the control plane
)

// Auth is the credential a route takes.
type Auth int

// The credentials.
const (
	Public        Auth = iota // none (probes, metrics)
	Admin                     // the admin token (admin.token)
	Tenant                    // a tenant API key
	TenantOrAdmin             // a tenant API key (its own data) or the admin token (everyone's)
	Session                   // the UI's own sign-in session (a cookie; the handler checks it and CSRF)
)

func (a Auth) String() string {
	return [...]string{"none", "admin token", "tenant API key", "tenant API key or admin token", "UI session"}[a]
}

// Route is one HTTP route.
type Route struct {
	Set       Set
	Pattern   string // net/http ServeMux pattern: "METHOD /path"
	Auth      Auth
	Operation string // operationId in schemas/openapi/openapi.yaml; "" for probes and metrics outside the API
}

// All is every route, by set.
var All = []Route{
	{Ops, "GET /healthz", Public, "healthz"},
	{Ops, "GET /readyz", Public, "readyz"},
	{Ops, "GET /metrics", Public, "metrics"},
	{Ops, "GET /api/v1/openapi.json", Public, "openapi"},

	{Tenants, "GET /api/v1/tenants", Admin, "listTenants"},
	{Tenants, "POST /api/v1/tenants", Admin, "createTenant"},
	{Tenants, "GET /api/v1/tenants/{id}", Admin, "getTenant"},
	{Tenants, "PATCH /api/v1/tenants/{id}", Admin, "updateTenant"},
	{Tenants, "POST /api/v1/tenants/{id}/suspend", Admin, "suspendTenant"},
	{Tenants, "POST /api/v1/tenants/{id}/activate", Admin, "activateTenant"},
	{Tenants, "POST /api/v1/tenants/{id}/rotate-key", Admin, "rotateKey"},
	{Tenants, "POST /api/v1/tenants/{id}/rotate-secret", Admin, "rotateSecret"},
	{Tenants, "POST /api/v1/tenant-secrets/reencrypt", Admin, "resealSecrets"},

	{DLQ, "GET /api/v1/dlq", Admin, "listDLQ"},
	{DLQ, "POST /api/v1/dlq/replay", Admin, "replayDLQ"},
	{DLQ, "POST /api/v1/dlq/recover", Admin, "recoverEndpoint"},

	{WebhookTest, "POST /api/v1/partners/webhooks/test", Tenant, "testWebhook"},

	{Analytics, "GET /api/v1/analytics/roi", TenantOrAdmin, "getROI"},

	// The web UI: HTML pages and forms under /ui/, outside the JSON API
	// (no operationId in the spec); sign-in is the partner's API key, a
	// portal link or the admin token, then a server-side session.
	{UI, "GET /ui/", Session, "ui"},
	{UI, "POST /ui/", Session, "ui"},
}

// ByMode is the route sets each mode serves. The DLQ and webhook-test
// routes live with the webhooks processor (they read its DLQ and use its
// delivery client), ROI with the attribution processor (its ClickHouse),
// the tenant API and the UI with the control plane; dev serves them all.
var ByMode = map[Mode][]Set{
	Dev:          {Ops, Tenants, DLQ, WebhookTest, Analytics, UI},
	ControlPlane: {Ops, Tenants, UI},
	Edge:         {Ops},
	Webhooks:     {Ops, DLQ, WebhookTest},
	Attribution:  {Ops, Analytics},
}

// Of returns the routes of sets, in table order.
func Of(sets ...Set) []Route {
	var out []Route
	for _, r := range All {
		for _, s := range sets {
			if r.Set == s {
				out = append(out, r)
			}
		}
	}
	return out
}

// For returns the routes mode serves.
func For(m Mode) []Route { return Of(ByMode[m]...) }

// Serves reports whether mode serves set.
func Serves(m Mode, s Set) bool {
	for _, x := range ByMode[m] {
		if x == s {
			return true
		}
	}
	return false
}
