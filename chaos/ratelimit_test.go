package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partners-engine/partners-engine/control-plane/xds"
	"github.com/partners-engine/partners-engine/control-plane/xds/xdstest"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

// The global rate limit as the region's Envoys use it: the region's
// envoyproxy/ratelimit service (configured by the deployment's control
// plane over xDS) counting in a Redis of the scenario's own, and the
// ShouldRateLimit calls an Envoy makes for each partner call the plugin
// allowed, derived from the listener and routes the control plane serves
// (control-plane/xds/xdstest; not a proxy). The ratelimit-down scenario
// SIGKILLs that Redis while the load runs.

type rateLimit struct {
	redis *testenv.Redis
	rls   *testenv.RateLimit
	edge  *xdstest.Edge
	conn  *grpc.ClientConn
	cl    rlsv3.RateLimitServiceClient
	// failClosed are the tiers whose calls Envoy refuses when the service
	// errs (partner.rate_limit.service.fail_closed_tiers).
	failClosed []string

	mu    sync.Mutex
	calls []rlCall
}

// rlCall is one partner call's rate-limit outcome.
type rlCall struct {
	at      time.Time
	tier    string
	outcome string // allowed | limited | refused (service error, fail closed) | passed (service error, fail open)
	deny    bool   // the filter's failure_mode_deny, for a service error
}

func (d *deployment) startRateLimit(t *testing.T) *rateLimit {
	t.Helper()
	cp := d.procs[roleControlPlane][0]
	r := &rateLimit{failClosed: d.cfg.Partner.RateLimit.Service.FailClosedTiers}
	r.redis = testenv.StartRedis(t)
	region := d.cfg.Regions[0].Name
	r.rls = testenv.StartRateLimit(t, testenv.RateLimitOptions{XDS: cp.grpc, Region: region, Redis: r.redis.Addr, KeyPrefix: strings.TrimSuffix(d.names.Prefix, ".") + "_"})
	xc, err := grpc.NewClient(cp.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer xc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := xds.Fetch(ctx, xc, region, "chaos-envoy-"+region)
	if err != nil {
		t.Fatalf("fetch the region's configuration over ADS: %v", err)
	}
	var pub *listener.Listener
	for _, m := range f.Resources[resource.ListenerType] {
		if l := m.(*listener.Listener); l.GetName() == xds.ListenerPublic {
			pub = l
		}
	}
	if pub == nil || len(f.Resources[resource.RouteType]) == 0 {
		t.Fatalf("the control plane serves no %s listener or no routes", xds.ListenerPublic)
	}
	if r.edge, err = xdstest.NewEdge(pub, f.Resources[resource.RouteType][0].(*route.RouteConfiguration)); err != nil {
		t.Fatal(err)
	}
	if r.conn, err = grpc.NewClient(r.rls.Addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	r.cl = rlsv3.NewRateLimitServiceClient(r.conn)
	return r
}

// call makes the ShouldRateLimit calls Envoy makes for an allowed partner
// call (headers and dynamic metadata after ext_authz) and records what
// Envoy does with the answers.
func (r *rateLimit) call(ctx context.Context, tier, path string, headers map[string]string, md map[string]*structpb.Struct) {
	c := rlCall{at: time.Now(), tier: tier, outcome: "allowed"}
	calls, err := r.edge.Requests(path, headers, md)
	if err != nil {
		c.outcome = "no route: " + err.Error()
	}
	for _, call := range calls {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := r.cl.ShouldRateLimit(cctx, call.Request)
		cancel()
		if err != nil {
			c.deny = call.Filter.GetFailureModeDeny()
			if c.deny {
				c.outcome = "refused"
				break
			}
			c.outcome = "passed"
			continue
		}
		if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
			c.outcome = "limited"
			break
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// rlSummary is the ratelimit scenario's figures.
type rlSummary struct {
	Calls      map[string]int `json:"calls_by_tier_outcome"` // "<tier> <outcome>" -> calls
	DuringDown map[string]int `json:"during_outage"`         // same, while Redis was down
	Problems   []string       `json:"problems,omitempty"`
	RecoverSec float64        `json:"service_recover_seconds"` // Redis back → first counted answer; -1: never
}

// summarize checks the documented behaviour: while Redis is down every
// call errs at the service and Envoy refuses the fail-closed tiers' calls
// and passes the others'; before and after, calls are counted (allowed or
// limited) and none errs.
func (r *rateLimit) summarize(down, up time.Time) rlSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := rlSummary{Calls: map[string]int{}, DuringDown: map[string]int{}, RecoverSec: -1}
	var firstOK time.Time
	for _, c := range r.calls {
		key := c.tier + " " + c.outcome
		s.Calls[key]++
		errored := c.outcome == "refused" || c.outcome == "passed"
		during := !c.at.Before(down) && c.at.Before(up)
		if during {
			s.DuringDown[key]++
		}
		if errored {
			wantDeny := slices.Contains(r.failClosed, c.tier)
			if c.deny != wantDeny {
				s.Problems = append(s.Problems, fmt.Sprintf("tier %s: Envoy %s on a service error, documented %s", c.tier, c.outcome, map[bool]string{true: "refused (fail closed)", false: "passed (fail open)"}[wantDeny]))
			}
			if c.at.Before(down) {
				s.Problems = append(s.Problems, fmt.Sprintf("tier %s: the service erred before Redis was stopped", c.tier))
			}
		} else if strings.HasPrefix(c.outcome, "no route") {
			s.Problems = append(s.Problems, c.outcome)
		} else if !c.at.Before(up) && firstOK.IsZero() {
			firstOK = c.at
		}
	}
	if !firstOK.IsZero() {
		s.RecoverSec = firstOK.Sub(up).Seconds()
		for _, c := range r.calls {
			if c.at.After(firstOK) && (c.outcome == "refused" || c.outcome == "passed") {
				s.Problems = append(s.Problems, fmt.Sprintf("tier %s: the service erred again %.1fs after it had recovered", c.tier, c.at.Sub(firstOK).Seconds()))
				break
			}
		}
	} else {
		s.Problems = append(s.Problems, "no call was counted after Redis came back")
	}
	if len(s.DuringDown) == 0 {
		s.Problems = append(s.Problems, "no partner call while Redis was down")
	}
	for _, c := range r.calls {
		if !c.at.Before(down) && c.at.Before(up) && c.at.After(down.Add(2*time.Second)) && c.outcome != "refused" && c.outcome != "passed" {
			s.Problems = append(s.Problems, fmt.Sprintf("tier %s: counted (%s) %.1fs into the Redis outage", c.tier, c.outcome, c.at.Sub(down).Seconds()))
			break
		}
	}
	return s
}
