// Package xdstest starts what the edge tests drive tenant changes through:
// a tenant registry following the tenants topic on the test brokers, the
// registry Writer and the admin API on an httptest server, all in process.
// Tests change tenants over HTTP exactly as operators do.
package xdstest

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/control-plane/adminapi"
	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/registry/registrytest"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/runner/routes"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

// Admin is a running registry + admin API.
type Admin struct {
	Registry *registry.Registry
	URL      string
	token    string
	t        testing.TB
}

// Options tune the writer.
type Options struct {
	KeyOverlap time.Duration // rotation overlap of API keys (0: old key revoked at once)
}

// Start runs a registry on cfg's tenants topic (on the test brokers,
// topics created) and the admin API in front of it. Everything stops at
// test cleanup.
func Start(t testing.TB, cfg *config.Config, log *slog.Logger, opt Options) *Admin {
	t.Helper()
	brokers, prod := testenv.Kafka(t, cfg)
	reg := registrytest.Start(t, cfg, brokers, log)
	w := registrytest.Writer(cfg, reg, prod, opt.KeyOverlap)
	api := adminapi.New(adminapi.Options{Token: cfg.Admin.Token, Pepper: cfg.Partner.Keys.Pepper,
		Registry: reg, Writer: w, Limits: cfg.Partner.RateLimit, Log: log})
	if err := api.Mount(routes.Of(routes.Ops, routes.Tenants), api.Handlers()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &Admin{Registry: reg, URL: srv.URL, token: cfg.Admin.Token, t: t}
}

// Do sends an admin request and decodes the JSON answer into out (if not
// nil). It fails the test on a status other than want.
func (a *Admin) Do(method, path string, body any, want int, out any) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		a.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// Created is the admin API's answer to a tenant creation.
type Created struct {
	ID      string   `json:"id"`
	Tier    string   `json:"tier"`
	Regions []string `json:"regions"`
	APIKey  string   `json:"api_key"`
	Version int64    `json:"version"`
}

// Create onboards a tenant through POST /api/v1/tenants.
func (a *Admin) Create(req registry.CreateRequest) Created {
	a.t.Helper()
	if req.WebhookURL == "" {
		req.WebhookURL = "http://127.0.0.1:9/hook"
	}
	var c Created
	a.Do(http.MethodPost, "/api/v1/tenants", req, http.StatusCreated, &c)
	return c
}

// Suspend suspends a tenant through the admin API.
func (a *Admin) Suspend(id string) {
	a.t.Helper()
	a.Do(http.MethodPost, "/api/v1/tenants/"+id+"/suspend", nil, http.StatusOK, nil)
}

// Activate activates a tenant through the admin API.
func (a *Admin) Activate(id string) {
	a.t.Helper()
	a.Do(http.MethodPost, "/api/v1/tenants/"+id+"/activate", nil, http.StatusOK, nil)
}

// Patch updates a tenant through the admin API.
func (a *Admin) Patch(id string, p registry.Patch) {
	a.t.Helper()
	a.Do(http.MethodPatch, "/api/v1/tenants/"+id, p, http.StatusOK, nil)
}

// RotateKey rotates a tenant's API key and returns the new key.
func (a *Admin) RotateKey(id string) string {
	a.t.Helper()
	var out struct {
		APIKey string `json:"api_key"`
	}
	a.Do(http.MethodPost, "/api/v1/tenants/"+id+"/rotate-key", nil, http.StatusOK, &out)
	return out.APIKey
}
