package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/partners-engine/partners-engine/control-plane/registry"
	"github.com/partners-engine/partners-engine/internal/authctx"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/ssrf"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

func portOf(rc *receiver) string {
	_, p, _ := net.SplitHostPort(rc.srv.Listener.Addr().String())
	return p
}

// TestSSRFAllowListByHostAndPort: an allow-list entry names an address and
// a port. A webhook on the allowed loopback port is delivered; one on
// another loopback port (a local database, say) and one on the IPv4-
// compatible IPv6 form of the allowed address are refused before any
// request, dead-lettered as blocked_address; and the test route answers a
// blocked target and a closed port with the same generic error.
func TestSSRFAllowListByHostAndPort(t *testing.T) {
	allowed := newReceiver(t, always(200))
	other := newReceiver(t, always(200)) // stands for 127.0.0.1:8123
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	e := newEnv(t, false, func(c *config.Config) {
		c.Partner.Webhooks.AllowPrivate = []string{"127.0.0.1:" + portOf(allowed), closedAddr}
	})
	ok := e.tenant("t-ssrf-ok", allowed)
	blocked := e.tenant("t-ssrf-blocked", other)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	compat, err := e.writer.Create(ctx, registry.CreateRequest{Name: "t-ssrf-v6", Tier: "standard",
		WebhookURL: fmt.Sprintf("http://[::127.0.0.1]:%s/hook", portOf(allowed))})
	if err != nil {
		t.Fatal(err)
	}
	refused, err := e.writer.Create(ctx, registry.CreateRequest{Name: "t-ssrf-refused", Tier: "standard", WebhookURL: "http://" + closedAddr + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	p := e.start()
	e.publish(e.event("evt_ssrf_1", "order.created", `{}`))
	testenv.Eventually(t, 30*time.Second, "allowed delivered, the others dead-lettered", func() bool {
		return allowed.count() == 1 && len(e.deadLetters()) >= 2
	})
	byTenant := map[string]string{}
	for _, dl := range e.deadLetters() {
		byTenant[dl.TenantID] = dl.ReasonCode
		if (dl.TenantID == blocked.Tenant.ID || dl.TenantID == compat.Tenant.ID) && (dl.ReasonCode != string(ReasonBlocked) || dl.Attempts != 1 || !strings.HasPrefix(dl.Reason, "permanent failure: blocked address")) {
			t.Errorf("dead letter of a blocked target: %+v", dl)
		}
	}
	if byTenant[blocked.Tenant.ID] != string(ReasonBlocked) || byTenant[compat.Tenant.ID] != string(ReasonBlocked) || byTenant[ok.Tenant.ID] != "" {
		t.Errorf("dead letters by tenant: %v", byTenant)
	}
	if other.count() != 0 {
		t.Fatalf("a loopback port not in the allow-list got %d requests", other.count())
	}
	// The test route is not a port scanner: blocked and refused look alike.
	api := &API{P: p}
	answer := func(c *registry.Created) TestResult {
		t.Helper()
		ten, _ := e.reg.Get(c.Tenant.ID)
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/api/v1/partners/webhooks/test", nil)
		api.Test(rec, req.WithContext(authctx.WithTenant(req.Context(), ten)))
		var out struct{ Results []TestResult }
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 || len(out.Results) != 1 {
			t.Fatalf("test route: %d %s", rec.Code, rec.Body)
		}
		return out.Results[0]
	}
	b, r := answer(blocked), answer(refused)
	if b.Outcome != r.Outcome || b.Error != r.Error || b.StatusCode != r.StatusCode || b.Error != errUnreachable {
		t.Errorf("test route tells a blocked target from a closed port: blocked %+v, refused %+v", b, r)
	}
	if other.count() != 0 {
		t.Errorf("the test route reached a port not in the allow-list")
	}
}

// TestGuardBlocksEmbeddedIPv4 covers the IPv6 ranges that carry an IPv4
// address (IPv4-compatible, 6to4, NAT64 local use, Teredo) and site-local:
// allowing 127.0.0.1 must not allow its IPv6 spellings, and public IPv4
// addresses behind them are refused too.
func TestGuardBlocksEmbeddedIPv4(t *testing.T) {
	rules, err := ssrf.ParseRules([]string{"127.0.0.1:443"})
	if err != nil {
		t.Fatal(err)
	}
	g := ssrf.NewGuard(rules)
	for _, a := range []string{"::127.0.0.1", "::7f00:1", "::10.0.0.1", "2002:7f00:1::1", "2002:a00:1::", "64:ff9b:1::7f00:1",
		"64:ff9b::7f00:1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fec0::1", "::ffff:0:7f00:1", "::", "100::1"} {
		if g.Allowed("", netip.AddrPortFrom(netip.MustParseAddr(a), 443)) {
			t.Errorf("%s:443 allowed", a)
		}
	}
	for _, bad := range []string{"127.0.0.1/32", "10.0.0.0/8", "hooks.internal", "[::1]", "127.0.0.1:0", "127.0.0.1:70000", "::1:443"} {
		if _, err := ssrf.ParseRule(bad); err == nil {
			t.Errorf("allow-list entry %q accepted: an entry needs a valid port", bad)
		}
	}
	for _, good := range []string{"127.0.0.1:9999", "10.0.0.0/8:443", "127.0.0.1/32:9900-9999", "[fd00::/8]:443", "[::1]:8080", "hooks.internal:8443"} {
		if _, err := ssrf.ParseRule(good); err != nil {
			t.Errorf("allow-list entry %q refused: %v", good, err)
		}
	}
	named, _ := ssrf.ParseRules([]string{"hooks.internal:8443"})
	gn := ssrf.NewGuard(named)
	if !gn.Allowed("hooks.internal", netip.MustParseAddrPort("10.1.2.3:8443")) || gn.Allowed("hooks.internal", netip.MustParseAddrPort("10.1.2.3:8123")) ||
		gn.Allowed("other.internal", netip.MustParseAddrPort("10.1.2.3:8443")) {
		t.Error("a host-name entry must allow that name on that port only")
	}
}
