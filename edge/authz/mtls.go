package authz

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/partners-engine/partners-engine/schemas"
)

// Client-certificate identity errors, each a 403 for an enterprise tenant.
var (
	errNoClientCert      = errors.New("enterprise tenants must present a client certificate (enterprise listener)")
	errClientCertUnread  = errors.New("the client certificate Envoy forwarded cannot be read")
	errNoIdentities      = errors.New("no client certificate identity is registered for this tenant (client_identities)")
	errIdentityNotServed = errors.New("the client certificate's identity is not one registered for this tenant")
)

// peerIdentities are the identities of the client certificate Envoy
// forwarded for the request: the URI and DNS subject alternative names of
// source.certificate (URL-encoded PEM, include_peer_certificate), else
// source.principal (the first URI SAN, DNS SAN or subject). Envoy has
// already verified the certificate against the enterprise CA; the plugin
// only binds its identity to the tenant. Parsed certificates are cached by
// their digest.
func (s *Server) peerIdentities(src *authv3.AttributeContext_Peer) ([]string, error) {
	if enc := src.GetCertificate(); enc != "" {
		sum := sha256.Sum256([]byte(enc))
		if ids, ok := s.certs.Get(sum); ok {
			return ids, nil
		}
		ids, err := certIdentities(enc)
		if err != nil {
			return nil, err
		}
		s.certs.Add(sum, ids)
		return ids, nil
	}
	if p := src.GetPrincipal(); p != "" {
		return []string{p}, nil
	}
	return nil, errNoClientCert
}

func certIdentities(enc string) ([]string, error) {
	raw, err := url.QueryUnescape(enc)
	if err != nil {
		return nil, errClientCertUnread
	}
	block, _ := pem.Decode([]byte(raw))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errClientCertUnread
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, errClientCertUnread
	}
	ids := make([]string, 0, len(cert.URIs)+len(cert.DNSNames))
	for _, u := range cert.URIs {
		ids = append(ids, u.String())
	}
	return append(ids, cert.DNSNames...), nil
}

// checkClientIdentity refuses an enterprise tenant's request unless the
// client certificate carries one of the tenant's registered identities.
func (s *Server) checkClientIdentity(t *schemas.Tenant, src *authv3.AttributeContext_Peer) (string, error) {
	ids, err := s.peerIdentities(src)
	if err != nil {
		return "", err
	}
	if len(t.ClientIdentities) == 0 {
		return "", errNoIdentities
	}
	for _, id := range ids {
		for _, allowed := range t.ClientIdentities {
			if id == allowed || (!strings.Contains(allowed, ":") && strings.EqualFold(id, allowed)) {
				return id, nil
			}
		}
	}
	return "", errIdentityNotServed
}
