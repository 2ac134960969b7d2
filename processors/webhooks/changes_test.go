package webhooks

import (
	"context"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/control-plane/registry/registrytest"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestChangesApplyBeforeNextAttempt: a delivery already scheduled (held by
// a 429's Retry-After) sees the tenant and endpoint as they are at its next
// attempt: a suspended tenant or a disabled endpoint gets no more requests
// (the delivery is dead-lettered, recoverable), a new URL gets the retry,
// and a revoked secret no longer signs it.
func TestChangesApplyBeforeNextAttempt(t *testing.T) {
	e := newEnv(t, false, nil)
	// Secrets rotate with no overlap: the old one is revoked at once.
	writer := registry.NewWriter(e.reg, e.cl, registry.WriterOptions{Topic: registrytest.Topic(e.cfg),
		Pepper: e.cfg.Partner.Keys.Pepper, Regions: e.cfg.RegionNames(), KeyOverlap: time.Hour, SecretOverlap: 0, Secrets: registrytest.Keyring(e.cfg)})
	limited := func(n int) (int, map[string]string, bool) {
		if n == 1 {
			return 429, map[string]string{"Retry-After": "2"}, false
		}
		return 200, nil, false
	}
	suspended, disabled, moved, rotated := newReceiver(t, limited), newReceiver(t, limited), newReceiver(t, limited), newReceiver(t, limited)
	movedTo := newReceiver(t, always(200))
	ts := map[string]*registry.Created{}
	for name, rc := range map[string]*receiver{"suspended": suspended, "disabled": disabled, "moved": moved, "rotated": rotated} {
		ts[name] = e.tenant("t-change-"+name, rc)
	}
	e.start()
	e.publish(e.event("evt_change_1", "order.created", `{}`))
	testenv.Eventually(t, 30*time.Second, "first attempts (429, Retry-After: 2)", func() bool {
		return suspended.count() == 1 && disabled.count() == 1 && moved.count() == 1 && rotated.count() == 1
	})
	time.Sleep(500 * time.Millisecond) // the retries are scheduled, waiting for their time
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := writer.SetStatus(ctx, ts["suspended"].Tenant.ID, schemas.StatusSuspended); err != nil {
		t.Fatal(err)
	}
	off := true
	d := ts["disabled"].Tenant.Endpoints[0]
	if _, err := writer.Update(ctx, ts["disabled"].Tenant.ID, registry.Patch{Endpoints: []registry.EndpointPatch{{ID: d.ID, URL: d.URL, Disabled: &off}}}); err != nil {
		t.Fatal(err)
	}
	m := ts["moved"].Tenant.Endpoints[0]
	if _, err := writer.Update(ctx, ts["moved"].Tenant.ID, registry.Patch{Endpoints: []registry.EndpointPatch{{ID: m.ID, URL: movedTo.url()}}}); err != nil {
		t.Fatal(err)
	}
	_, newSecret, err := writer.RotateSecret(ctx, ts["rotated"].Tenant.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "retries after the Retry-After", func() bool {
		return rotated.count() == 2 && movedTo.count() == 1 && len(e.deadLetters()) == 2
	})
	time.Sleep(500 * time.Millisecond) // a retry that should not happen would have by now
	if suspended.count() != 1 || disabled.count() != 1 || moved.count() != 1 {
		t.Errorf("requests after the change: suspended tenant %d, disabled endpoint %d, old URL %d; want 1 each",
			suspended.count(), disabled.count(), moved.count())
	}
	last := rotated.requests()[1]
	if wh, _ := standardwebhooks.NewWebhook(newSecret); wh.Verify(last.body, last.header) != nil {
		t.Error("the retry after a rotation does not verify with the new secret")
	}
	if wh, _ := standardwebhooks.NewWebhook(ts["rotated"].WebhookSecret); wh.Verify(last.body, last.header) == nil {
		t.Error("the retry after a rotation with no overlap still verifies with the revoked secret")
	}
	if got := movedTo.requests()[0]; got.id != moved.requests()[0].id {
		t.Errorf("the new URL got webhook-id %s, want the scheduled delivery %s", got.id, moved.requests()[0].id)
	}
	reasons := map[string]string{}
	for _, dl := range e.deadLetters() {
		reasons[dl.TenantID] = dl.ReasonCode
	}
	if reasons[ts["suspended"].Tenant.ID] != string(ReasonTenantSuspended) || reasons[ts["disabled"].Tenant.ID] != string(ReasonEndpointDisabled) {
		t.Errorf("dead letters by tenant: %v", reasons)
	}
}
