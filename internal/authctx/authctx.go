// Package authctx carries the authenticated caller of an HTTP request in its
// context: the admin API's tenant-key middleware puts the tenant there, and
// the handlers other areas mount (ROI, webhook test) read it, so no area
// imports the registry or the admin API for it.
package authctx

import (
	"context"

	"github.com/partners-engine/partners-engine/schemas"
)

type tenantKey struct{}

// WithTenant returns ctx carrying the authenticated tenant.
func WithTenant(ctx context.Context, t *schemas.Tenant) context.Context {
	return context.WithValue(ctx, tenantKey{}, t)
}

// TenantFrom returns the authenticated tenant of ctx, if any. A request
// authenticated with the admin token carries none.
func TenantFrom(ctx context.Context) (*schemas.Tenant, bool) {
	t, ok := ctx.Value(tenantKey{}).(*schemas.Tenant)
	return t, ok && t != nil
}
