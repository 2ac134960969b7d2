package webhooks

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/partners-engine/partners-engine/schemas"
)

var (
	specOnce   sync.Once
	specRouter routers.Router
	specErr    error
)

// call serves one request with h and checks both the request and the
// response against schemas/openapi/openapi.yaml: the DLQ and test routes
// answer what the spec (and the generated CLI client) says.
func call(t *testing.T, h http.HandlerFunc, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(schemas.OpenAPI)
		if err == nil {
			err = doc.Validate(loader.Context)
		}
		if err != nil {
			specErr = err
			return
		}
		doc.Servers = openapi3.Servers{{URL: "http://example.com"}}
		specRouter, specErr = gorillamux.NewRouter(doc)
	})
	if specErr != nil {
		t.Fatal(specErr)
	}
	route, params, err := specRouter.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s: not in the OpenAPI spec: %v", req.Method, req.URL, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	rec := httptest.NewRecorder()
	h(rec, req)
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	out.SetBodyBytes(rec.Body.Bytes())
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Fatalf("%s %s → %d: response violates the spec: %v\n%s", req.Method, req.URL, rec.Code, err, rec.Body)
	}
	return rec
}
