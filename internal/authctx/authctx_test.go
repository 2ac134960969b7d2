package authctx

import (
	"context"
	"testing"

	"github.com/partners-engine/partners-engine/schemas"
)

func TestTenantRoundTrip(t *testing.T) {
	t.Parallel()
	if _, ok := TenantFrom(context.Background()); ok {
		t.Fatal("an empty context carries no tenant")
	}
	if _, ok := TenantFrom(WithTenant(context.Background(), nil)); ok {
		t.Fatal("a nil tenant is no tenant")
	}
	want := &schemas.Tenant{ID: "tn_1"}
	got, ok := TenantFrom(WithTenant(context.Background(), want))
	if !ok || got != want {
		t.Fatalf("got %v %v", got, ok)
	}
}
