package xdstest

import (
	"fmt"
	"strings"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// The rate-limit requests an Envoy sends for a request, derived from the
// generated configuration: which route the request takes (prefix and exact
// header matchers, first match wins) and, for each global rate-limit filter
// of the listener, the descriptors of the route's rate limits at that
// filter's stage. Only the parts of Envoy's semantics the control plane's
// configuration uses are implemented — request_headers and generic_key
// actions, a limit override from dynamic metadata — and anything else is an
// error, so a test fails rather than guessing when the configuration grows.
// This derives requests from configuration; it is not a proxy.

// Edge is what an Envoy replica holds of a region's configuration.
type Edge struct {
	Filters []*grl.RateLimit // the listener's global rate-limit filters, in chain order
	Routes  *route.RouteConfiguration
}

// NewEdge reads the global rate-limit filters of l and keeps rc.
func NewEdge(l *listener.Listener, rc *route.RouteConfiguration) (*Edge, error) {
	e := &Edge{Routes: rc}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			m := &hcm.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
				return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
			}
			for _, hf := range m.GetHttpFilters() {
				if hf.GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit" {
					continue
				}
				g := &grl.RateLimit{}
				if err := hf.GetTypedConfig().UnmarshalTo(g); err != nil {
					return nil, err
				}
				e.Filters = append(e.Filters, g)
			}
		}
	}
	if len(e.Filters) == 0 {
		return nil, fmt.Errorf("listener %s has no global rate-limit filter", l.GetName())
	}
	return e, nil
}

// Route returns the route a request with path and headers takes.
func (e *Edge) Route(path string, headers map[string]string) (*route.Route, error) {
	for _, vh := range e.Routes.GetVirtualHosts() {
	routes:
		for _, r := range vh.GetRoutes() {
			m := r.GetMatch()
			p, ok := m.GetPathSpecifier().(*route.RouteMatch_Prefix)
			if !ok {
				return nil, fmt.Errorf("route %s: only prefix matches are understood", r.GetName())
			}
			if !strings.HasPrefix(path, p.Prefix) {
				continue
			}
			for _, h := range m.GetHeaders() {
				exact := h.GetStringMatch().GetExact()
				if exact == "" {
					return nil, fmt.Errorf("route %s: only exact header matches are understood", r.GetName())
				}
				if headers[h.GetName()] != exact {
					continue routes
				}
			}
			return r, nil
		}
	}
	return nil, fmt.Errorf("no route for %s", path)
}

// Requests are the ShouldRateLimit requests Envoy sends for a request the
// plugin allowed: headers are the request's after ext_authz (the plugin's
// headers set), metadata the stream's dynamic metadata by namespace (the
// plugin's answer lives under envoy.filters.http.ext_authz).
// Each element pairs a filter with its request; a filter whose stage has no
// descriptor on the route sends nothing, as Envoy does.
func (e *Edge) Requests(path string, headers map[string]string, metadata map[string]*structpb.Struct) ([]Call, error) {
	r, err := e.Route(path, headers)
	if err != nil {
		return nil, err
	}
	var out []Call
	for _, f := range e.Filters {
		var ds []*rlcommon.RateLimitDescriptor
		for _, rl := range r.GetRoute().GetRateLimits() {
			if rl.GetStage().GetValue() != f.GetStage() {
				continue
			}
			d, err := descriptor(rl, headers, metadata)
			if err != nil {
				return nil, fmt.Errorf("route %s: %w", r.GetName(), err)
			}
			if d != nil {
				ds = append(ds, d)
			}
		}
		if len(ds) > 0 {
			out = append(out, Call{Filter: f, Request: &rlsv3.RateLimitRequest{Domain: f.GetDomain(), Descriptors: ds}})
		}
	}
	return out, nil
}

// Call is one ShouldRateLimit call and the filter that makes it.
type Call struct {
	Filter  *grl.RateLimit
	Request *rlsv3.RateLimitRequest
}

// descriptor is one rate limit's descriptor; nil when an action yields no
// entry (a missing header), in which case Envoy sends none for it.
func descriptor(rl *route.RateLimit, headers map[string]string, metadata map[string]*structpb.Struct) (*rlcommon.RateLimitDescriptor, error) {
	d := &rlcommon.RateLimitDescriptor{}
	for _, a := range rl.GetActions() {
		switch spec := a.GetActionSpecifier().(type) {
		case *route.RateLimit_Action_RequestHeaders_:
			v, ok := headers[strings.ToLower(spec.RequestHeaders.GetHeaderName())]
			if !ok {
				if spec.RequestHeaders.GetSkipIfAbsent() {
					continue
				}
				return nil, nil
			}
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: spec.RequestHeaders.GetDescriptorKey(), Value: v})
		case *route.RateLimit_Action_GenericKey_:
			k := spec.GenericKey.GetDescriptorKey()
			if k == "" {
				k = "generic_key"
			}
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: k, Value: spec.GenericKey.GetDescriptorValue()})
		default:
			return nil, fmt.Errorf("rate limit action %T is not understood", spec)
		}
	}
	if o := rl.GetLimit(); o != nil {
		dm := o.GetDynamicMetadata()
		if dm == nil {
			return nil, fmt.Errorf("limit override %v is not understood", o)
		}
		if l := overrideFrom(metadata, dm.GetMetadataKey().GetKey(), dm.GetMetadataKey().GetPath()); l != nil {
			d.Limit = l
		}
	}
	return d, nil
}

// overrideFrom reads {requests_per_unit, unit} at the metadata key's path;
// Envoy ignores a missing or malformed value (no override).
func overrideFrom(md map[string]*structpb.Struct, namespace string, path []*metadatav3.MetadataKey_PathSegment) *rlcommon.RateLimitDescriptor_RateLimitOverride {
	st := md[namespace]
	if st == nil {
		return nil
	}
	v := structpb.NewStructValue(st)
	for _, seg := range path {
		f := v.GetStructValue().GetFields()[seg.GetKey()]
		if f == nil {
			return nil
		}
		v = f
	}
	fields := v.GetStructValue().GetFields()
	n, unit := fields["requests_per_unit"], fields["unit"]
	if n == nil || unit == nil {
		return nil
	}
	u, ok := typev3.RateLimitUnit_value[unit.GetStringValue()]
	if !ok {
		return nil
	}
	return &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: uint32(n.GetNumberValue()), Unit: typev3.RateLimitUnit(u)}
}
