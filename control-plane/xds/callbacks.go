package xds

import (
	"context"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// streamState is what the control plane remembers of one xDS stream.
type streamState struct {
	mu     sync.Mutex
	region string // snapshot key: a configured region or UnknownRegion
	seen   bool
	sent   map[string]string // type URL -> version of the last response sent
	acked  map[string]string // type URL -> last version the node accepted
}

func (s *Server) stream(id int64) *streamState {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	st, ok := s.streams[id]
	if !ok {
		st = &streamState{sent: map[string]string{}, acked: map[string]string{}}
		s.streams[id] = st
	}
	return st
}

func (s *Server) closeStream(id int64) {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if _, ok := s.streams[id]; ok {
		delete(s.streams, id)
		s.m.streams.Dec()
	}
}

// identify records the stream's region on its first request and logs nodes
// of unknown regions (they get the empty snapshot).
func (s *Server) identify(st *streamState, node *core.Node) string {
	if st.seen {
		return st.region
	}
	st.seen = true
	st.region = regionHash{known: s.regions}.ID(node)
	if st.region == UnknownRegion {
		s.m.unknownNodes.Inc()
		s.log.Warn("xDS node names no configured region: serving it an empty configuration",
			"node", node.GetId(), "cluster", node.GetCluster(), "locality_region", node.GetLocality().GetRegion(),
			"regions", s.cfg.RegionNames())
	} else {
		s.log.Info("xDS stream", "node", node.GetId(), "region", st.region)
	}
	return st.region
}

// callbacks detect ACKs and NACKs. A NACK is a request with error_detail
// set; its version_info is the last version the node accepted, which it
// keeps running.
//
// go-control-plane's SotW snapshot cache answers any request whose
// version_info differs from the snapshot's version at once, so a NACK
// (carrying the older, accepted version) would get the rejected snapshot
// again, be NACKed again, and so on. To stop that loop, the NACK request is
// presented to the cache as holding the rejected version: the watch then
// stays open and the node hears from us again only when a newer snapshot
// replaces the rejected one. The delta server tracks resource versions per
// stream and does not resend unchanged resources, so delta needs no help.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(context.Context, int64, string) error {
			s.m.streams.Inc()
			return nil
		},
		StreamClosedFunc: func(id int64, _ *core.Node) { s.closeStream(id) },
		DeltaStreamOpenFunc: func(context.Context, int64, string) error {
			s.m.streams.Inc()
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { s.closeStream(id) },
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			st := s.stream(id)
			st.mu.Lock()
			defer st.mu.Unlock()
			region := s.identify(st, req.GetNode())
			typ := req.GetTypeUrl()
			switch {
			case req.GetErrorDetail() != nil:
				rejected := st.sent[typ]
				s.nack(region, req.GetNode(), typ, rejected, req.GetVersionInfo(), req.GetErrorDetail().GetMessage())
				if rejected != "" {
					req.VersionInfo = rejected
				}
			case req.GetResponseNonce() != "":
				st.acked[typ] = req.GetVersionInfo()
				s.m.acks.WithLabelValues(region, shortType(typ)).Inc()
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			st := s.stream(id)
			st.mu.Lock()
			st.sent[resp.GetTypeUrl()] = resp.GetVersionInfo()
			st.mu.Unlock()
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			st := s.stream(id)
			st.mu.Lock()
			defer st.mu.Unlock()
			region := s.identify(st, req.GetNode())
			typ := req.GetTypeUrl()
			switch {
			case req.GetErrorDetail() != nil:
				s.nack(region, req.GetNode(), typ, st.sent[typ], st.acked[typ], req.GetErrorDetail().GetMessage())
			case req.GetResponseNonce() != "":
				st.acked[typ] = st.sent[typ]
				s.m.acks.WithLabelValues(region, shortType(typ)).Inc()
			}
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
			st := s.stream(id)
			st.mu.Lock()
			st.sent[resp.GetTypeUrl()] = resp.GetSystemVersionInfo()
			st.mu.Unlock()
		},
	}
}

func (s *Server) nack(region string, node *core.Node, typ, rejected, kept, detail string) {
	s.m.nacks.WithLabelValues(region, shortType(typ)).Inc()
	s.log.Error("xDS NACK: Envoy rejected the configuration and keeps its last accepted version",
		"node", node.GetId(), "region", region, "type", shortType(typ),
		"rejected_version", rejected, "kept_version", kept, "error_detail", detail)
}
