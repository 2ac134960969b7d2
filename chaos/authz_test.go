package chaos

import (
	"context"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/partners-engine/partners-engine/schemas"
)

// checkInput is one partner request as Envoy presents it to ext_authz.
type checkInput struct {
	Key, Path, UserID, Region, RequestID string
}

// check sends a CheckRequest shaped as Envoy's (the HTTP attributes, the
// route's context extensions) and returns the status Envoy would answer
// with: 0 when allowed.
func check(ctx context.Context, c authv3.AuthorizationClient, in checkInput) (int, error) {
	code, _, _, err := checkFull(ctx, c, in)
	return code, err
}

// checkFull is check that also returns, for an allowed call, the request's
// headers as the next filters see them (the plugin's set, its removals)
// and the stream's dynamic metadata (the plugin's answer, by namespace).
func checkFull(ctx context.Context, c authv3.AuthorizationClient, in checkInput) (int, map[string]string, map[string]*structpb.Struct, error) {
	host := "edge." + in.Region + ".partners.example"
	headers := map[string]string{
		":authority": host, ":method": "GET", ":path": in.Path, ":scheme": "https",
		"user-agent": "partners-chaos/1.0", "x-request-id": in.RequestID,
	}
	if in.Key != "" {
		headers["authorization"] = "Bearer " + in.Key
	}
	if in.UserID != "" {
		headers["x-partner-user-id"] = in.UserID
	}
	path, _, _ := strings.Cut(in.Path, "?")
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sockAddr("203.0.113.7", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: sockAddr("10.0.0.10", 10000)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: in.RequestID, Method: "GET", Headers: headers, Path: in.Path,
				Host: host, Scheme: "https", Protocol: "HTTP/1.1",
			},
		},
		ContextExtensions: map[string]string{"region": in.Region, "route": path},
	}}
	resp, err := c.Check(ctx, req)
	if err != nil {
		return 0, nil, nil, err
	}
	if resp.GetStatus().GetCode() == 0 {
		for _, h := range resp.GetOkResponse().GetHeaders() {
			headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		for _, k := range resp.GetOkResponse().GetHeadersToRemove() {
			delete(headers, k)
		}
		md := map[string]*structpb.Struct{}
		if resp.GetDynamicMetadata() != nil {
			md[schemas.MetadataNamespace] = resp.GetDynamicMetadata()
		}
		return 0, headers, md, nil
	}
	if d := resp.GetDeniedResponse(); d != nil && d.GetStatus() != nil {
		return int(d.GetStatus().GetCode()), nil, nil, nil
	}
	return 403, nil, nil, nil
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}
