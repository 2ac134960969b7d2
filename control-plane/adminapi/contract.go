package adminapi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/httpx"
	"github.com/partners-engine/partners-engine/internal/jwks"
	"github.com/partners-engine/partners-engine/internal/problem"
	"github.com/partners-engine/partners-engine/internal/runner/routes"
	"github.com/partners-engine/partners-engine/schemas"
)

// Contract is the OpenAPI document a server enforces: the spec
// (schemas/openapi/openapi.yaml) with this deployment's region names as
// the Region enum. Every request to a route of the spec is validated
// against its operation before the handler runs — parameters, headers,
// the body and its content type — so the server refuses exactly what the
// spec forbids, whoever wrote the handler. The same document is served at
// GET /api/v1/openapi.json.
type Contract struct {
	doc  *openapi3.T
	json []byte
}

// LoadContract loads the spec with regions as the Region enum and features
// as the feature flags (nil: the spec's own).
func LoadContract(regions, features []string) (*Contract, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(schemas.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	if rs := doc.Components.Schemas["Region"]; rs != nil && rs.Value != nil && len(regions) > 0 {
		rs.Value.Enum = nil
		for _, r := range regions {
			rs.Value.Enum = append(rs.Value.Enum, r)
		}
	}
	if fs := doc.Components.Schemas["Features"]; fs != nil && fs.Value != nil && features != nil {
		fs.Value.Properties = openapi3.Schemas{}
		for _, f := range features {
			fs.Value.Properties[f] = openapi3.NewBoolSchema().NewRef()
		}
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	b, err := doc.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	return &Contract{doc: doc, json: b}, nil
}

// JSON is the document as JSON.
func (c *Contract) JSON() []byte { return c.json }

// Doc is the document (read-only).
func (c *Contract) Doc() *openapi3.T { return c.doc }

// operation returns the spec's operation of a route pattern ("METHOD /path",
// the path in the spec's template syntax).
func (c *Contract) operation(pattern string) (*routers.Route, bool) {
	method, path, _ := strings.Cut(pattern, " ")
	pi := c.doc.Paths.Value(path)
	if pi == nil {
		return nil, false
	}
	op := pi.GetOperation(method)
	if op == nil {
		return nil, false
	}
	return &routers.Route{Spec: c.doc, Path: path, PathItem: pi, Method: method, Operation: op}, true
}

// validate wraps h so that a request that violates the operation of rt is
// answered with a problem (400 naming the field, 413, 415) and never
// reaches h. A route outside the spec is returned unwrapped.
func (c *Contract) validate(rt routes.Route, h http.HandlerFunc) http.HandlerFunc {
	route, ok := c.operation(rt.Pattern)
	if !ok {
		return h
	}
	var names []string
	for _, seg := range strings.Split(route.Path, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			names = append(names, seg[1:len(seg)-1])
		}
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:      openapi3filter.NoopAuthenticationFunc, // the credential is checked before, by the route's Auth
		SkipSettingDefaults:     true,                                  // handlers see the body as it was sent
		SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.WithStringFormatValidators(Formats)},
	}
	return func(w http.ResponseWriter, r *http.Request) {
		params := make(map[string]string, len(names))
		for _, n := range names {
			params[n] = r.PathValue(n)
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, httpx.MaxBody)
		}
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}
		if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
			writeRequestError(w, r, err)
			return
		}
		h(w, r)
	}
}

// writeRequestError answers a request the spec refuses.
func writeRequestError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		problem.Error(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", httpx.MaxBody))
		return
	}
	var re *openapi3filter.RequestError
	if !errors.As(err, &re) {
		problem.Error(w, r, http.StatusBadRequest, "request does not match the API: "+err.Error())
		return
	}
	if re.RequestBody != nil && strings.HasPrefix(re.Reason, "header Content-Type has unexpected value") {
		problem.Error(w, r, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	d := problem.New(http.StatusBadRequest, "")
	switch {
	case re.Parameter != nil:
		d.Field = re.Parameter.Name
		d.Detail = fmt.Sprintf("%s parameter %s: %s", re.Parameter.In, re.Parameter.Name, reason(re))
	case re.RequestBody != nil:
		d.Field = bodyField(re.Err)
		where := "request body"
		if d.Field != "" {
			where += " field " + d.Field
		}
		d.Detail = where + ": " + reason(re)
	default:
		d.Detail = reason(re)
	}
	problem.Write(w, r, d)
}

// reason words a validation error without echoing the offending value (it
// may be a secret or personal data): the schema's complaint only.
func reason(re *openapi3filter.RequestError) string {
	var se *openapi3.SchemaError
	if errors.As(re.Err, &se) {
		if se.Reason != "" {
			return se.Reason
		}
	}
	if errors.Is(re.Err, openapi3filter.ErrInvalidRequired) {
		return "is required"
	}
	if errors.Is(re.Err, openapi3filter.ErrInvalidEmptyValue) {
		return "must not be empty"
	}
	var pe *openapi3filter.ParseError
	if errors.As(re.Err, &pe) {
		return "cannot be parsed: " + pe.Reason
	}
	if re.Reason != "" && re.Err == nil {
		return re.Reason
	}
	if re.Err != nil {
		return strings.TrimPrefix(re.Err.Error(), "value ")
	}
	return re.Reason
}

// bodyField is the dotted path of the body field a schema error is about
// ("rate_limit.burst_size", "endpoints[0].url"); "" for the body itself.
func bodyField(err error) string {
	var se *openapi3.SchemaError
	if !errors.As(err, &se) {
		return ""
	}
	var b strings.Builder
	for _, p := range se.JSONPointer() {
		if p == "" {
			continue
		}
		if p[0] >= '0' && p[0] <= '9' && b.Len() > 0 {
			b.WriteString("[" + p + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

// methodsFor returns the methods the mux serves for r's path (with HEAD
// beside GET, as net/http serves it), sorted: the Allow header of a 405.
func methodsFor(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(context.Background())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			out = append(out, m)
			if m == http.MethodGet {
				out = append(out, http.MethodHead)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Formats are the spec's custom string formats, checked exactly as the
// registry checks the fields they describe.
var Formats = map[string]openapi3.StringFormatValidator{
	"partner-name": openapi3.NewCallbackValidator(func(v string) error { return registry.CheckName(v) }),
	"printable":    openapi3.NewCallbackValidator(func(v string) error { return registry.CheckPrintable(v) }),
	"jwks": openapi3.NewCallbackValidator(func(v string) error {
		_, err := jwks.Parse([]byte(v))
		return err
	}),
	"page-token": openapi3.NewCallbackValidator(checkPageToken),
	"time-or-ago": openapi3.NewCallbackValidator(func(v string) error {
		if _, err := time.Parse(time.RFC3339, v); err == nil {
			return nil
		}
		if d, err := time.ParseDuration(v); err != nil || d < 0 {
			return errors.New("must be an RFC 3339 time or a non-negative duration like 24h")
		}
		return nil
	}),
	"date-time": openapi3.NewCallbackValidator(func(v string) error {
		_, err := time.Parse(time.RFC3339, v)
		return err
	}),
	"date": openapi3.NewCallbackValidator(func(v string) error {
		_, err := time.Parse(time.DateOnly, v)
		return err
	}),
}

// checkPageToken accepts what the DLQ listing issues as next_page_token:
// base64url (no padding) of "<unix nanoseconds>|<key>".
func checkPageToken(v string) error {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return errors.New("is not a page token this API issued")
	}
	ns, _, ok := strings.Cut(string(b), "|")
	if _, err := strconv.ParseInt(ns, 10, 64); !ok || err != nil {
		return errors.New("is not a page token this API issued")
	}
	return nil
}
