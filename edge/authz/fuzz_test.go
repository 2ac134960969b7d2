package authz_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partners-engine/partners-engine/edge/authz"
	"github.com/partners-engine/partners-engine/internal/apikey"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// FuzzParseBearer: any header either yields a well-formed key or an error,
// never a panic, and never a key longer than the header allows.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"", "Bearer", "Bearer ", "bearer pk_std_" + strings.Repeat("a", 43), "Basic abc",
		"Bearer  pk_ent_x", "Bearer pk_sbx_\x00\xff", "BEARER\tpk_std_" + strings.Repeat("Z", 43), strings.Repeat("Bearer ", 1000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		key, err := authz.ParseBearer(h, 4096)
		if err != nil {
			if key != "" {
				t.Fatalf("error %v with key %q", err, key)
			}
			return
		}
		if !apikey.LooksValid(key) || len(key) > len(h) || !strings.Contains(h, key) {
			t.Fatalf("accepted %q from %q", key, h)
		}
	})
}

// FuzzCheck sends arbitrary Authorization headers and paths through the
// whole decision: the answer is always one of 200/400/401/403/404 and a denial
// always has a problem body.
func FuzzCheck(f *testing.F) {
	cfg := testenv.Config(f)
	tenants := newFakeTenants()
	key := apikey.New("standard")
	tn := &schemas.Tenant{ID: "tn_fuzz", Tier: "standard", Status: "active", Regions: []string{"us-east"}, Version: 1,
		Keys: []schemas.APIKey{{ID: "k", Hash: apikey.Hash(cfg.Partner.Keys.Pepper, key)}}}
	tenants.put(nil, tn)
	srv, err := authz.New(authz.Options{Config: authz.NewConfig(cfg), Tenants: tenants, Producer: &sink{}, Names: kafka.Names{},
		Log: (&testenv.LogBuffer{}).Logger(f), Registerer: prometheus.NewRegistry(), Now: time.Now})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer "+key, "/api/v1/partners/x?uid=1")
	f.Add("Bearer "+key, "/api/v1/partners/reports")
	f.Add("", "/")
	f.Add("Bearer "+key+"x", "/api/v1/partners/%zz?uid=%")
	f.Fuzz(func(t *testing.T, auth, path string) {
		resp, err := srv.Check(context.Background(), envoyRequest{path: path, headers: map[string]string{"authorization": auth, "x-partner-user-id": auth}}.proto())
		if err != nil {
			t.Fatal(err)
		}
		switch s := status(resp); s {
		case 200:
		case 400, 401, 403, 404:
			if !strings.Contains(resp.GetDeniedResponse().GetBody(), `"status":`) {
				t.Fatalf("denial without problem body: %v", resp)
			}
		default:
			t.Fatalf("status %d", s)
		}
	})
}
