// Package ssrf owns the outbound-connection guard of partners-engine: which
// resolved addresses a connection to a partner-supplied URL (a webhook) may
// reach. Private, loopback, link-local, CGNAT, multicast, metadata and the
// IPv6 ranges that embed or translate IPv4 addresses are refused unless an
// allow-list entry names the address *and* the port; the check runs on the
// address actually dialled, after DNS, so a name that resolves (or
// re-resolves) to a private address is refused too.
package ssrf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrBlocked is returned for a dial the guard refuses.
var ErrBlocked = errors.New("address not allowed")

// blocked are the ranges refused by default.
var blocked = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		// IPv4: this network, RFC 1918, CGNAT, loopback, link-local (and
		// cloud metadata), IETF protocol assignments, benchmarking,
		// multicast, reserved, broadcast, documentation.
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
		"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
		// IPv6: unspecified, loopback, IPv4-compatible (::a.b.c.d, the
		// whole ::/96 embeds an IPv4 address), IPv4-mapped, IPv4-translated,
		// NAT64 (well-known and local-use), discard, Teredo, ORCHID,
		// documentation, 6to4, unique local, site-local, link-local,
		// multicast, and the AWS metadata address.
		"::/128", "::1/128", "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48",
		"100::/64", "2001::/32", "2001:10::/28", "2001:20::/28", "2001:db8::/32", "2002::/16",
		"fc00::/7", "fec0::/10", "fe80::/10", "ff00::/8", "fd00:ec2::254/128",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// Rule is one allow-list entry: a network or a host name, and a port range.
type Rule struct {
	Prefix   netip.Prefix // valid for an address rule
	Host     string       // lower-case host name for a name rule
	FromPort uint16
	ToPort   uint16
}

func (r Rule) port(p uint16) bool { return p >= r.FromPort && p <= r.ToPort }

// String is the entry as it is written in the configuration.
func (r Rule) String() string {
	ports := strconv.Itoa(int(r.FromPort))
	if r.ToPort != r.FromPort {
		ports += "-" + strconv.Itoa(int(r.ToPort))
	}
	if r.Host != "" {
		return r.Host + ":" + ports
	}
	if r.Prefix.Addr().Is6() {
		return "[" + r.Prefix.String() + "]:" + ports
	}
	return r.Prefix.String() + ":" + ports
}

// ParseRule parses an allow-list entry: an address or CIDR, or a host name,
// with a port or port range, e.g. "127.0.0.1:9999", "10.0.0.0/8:443",
// "127.0.0.1/32:9900-9999", "[fd00::/8]:443", "hooks.internal:8443". A port
// is required: an entry that allowed every port of an internal host would
// let a webhook URL reach its databases.
func ParseRule(s string) (Rule, error) {
	s = strings.TrimSpace(s)
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return Rule{}, fmt.Errorf("%q: want host, address or CIDR with a port, like 10.0.0.0/8:443 or hooks.internal:8443", s)
	}
	host, ports := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return Rule{}, fmt.Errorf("%q: write an IPv6 address or CIDR in brackets, like [fd00::/8]:443", s)
	}
	var r Rule
	lo, hi, ok := strings.Cut(ports, "-")
	if !ok {
		hi = lo
	}
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || a == 0 || b < a {
		return Rule{}, fmt.Errorf("%q: port %q must be 1-65535 or a range like 9900-9999", s, ports)
	}
	r.FromPort, r.ToPort = uint16(a), uint16(b)
	if p, err := netip.ParsePrefix(host); err == nil {
		r.Prefix = p.Masked()
		return r, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		r.Prefix = netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())
		return r, nil
	}
	if !validHostName(host) {
		return Rule{}, fmt.Errorf("%q: %q is not an address, a CIDR or a host name", s, host)
	}
	r.Host = strings.ToLower(strings.TrimSuffix(host, "."))
	return r, nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// ParseRules parses allow-list entries. An entry may hold several rules
// separated by commas or spaces (one environment variable can carry a
// list); empty entries are ignored.
func ParseRules(entries []string) ([]Rule, error) {
	var out []Rule
	for _, e := range entries {
		for _, f := range strings.FieldsFunc(e, func(r rune) bool { return r == ',' || r == ' ' }) {
			r, err := ParseRule(f)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// Guard decides whether a connection may be made.
type Guard struct {
	rules []Rule
}

// NewGuard returns a guard with the given allow-list.
func NewGuard(rules []Rule) *Guard { return &Guard{rules: rules} }

// Public reports whether ip is a public unicast address (not in any blocked
// range).
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range blocked {
		if p.Contains(ip) {
			return false
		}
	}
	return ip.IsGlobalUnicast()
}

// Allowed reports whether ip:port may be dialled for a URL whose host is
// host (a name rule allows any address its name resolves to).
func (g *Guard) Allowed(host string, ap netip.AddrPort) bool {
	ip, port := ap.Addr().Unmap(), ap.Port()
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, r := range g.rules {
		if !r.port(port) {
			continue
		}
		if r.Host != "" {
			if r.Host == host {
				return true
			}
			continue
		}
		if r.Prefix.Contains(ip) {
			return true
		}
	}
	return Public(ip)
}

// DialContext returns a dial function that refuses what the guard refuses,
// after resolution, on the address actually dialled.
func (g *Guard) DialContext(connect, keepAlive time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrBlocked, addr)
		}
		d := &net.Dialer{Timeout: connect, KeepAlive: keepAlive,
			Control: func(_, address string, _ syscall.RawConn) error {
				ap, err := netip.ParseAddrPort(address)
				if err != nil || !g.Allowed(host, ap) {
					return fmt.Errorf("%w: %s is a private, loopback, link-local or reserved address, or a port not in the allow-list", ErrBlocked, address)
				}
				return nil
			}}
		return d.DialContext(ctx, network, addr)
	}
}
