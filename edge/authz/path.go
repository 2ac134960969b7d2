package authz

import (
	"errors"
	"strings"
)

// ErrBadPath is a request path the plugin will not interpret: an encoded
// slash or backslash, a raw backslash, a control character, a fragment or a
// broken percent escape. Envoy's listener refuses the first ones itself
// (path_with_escaped_slashes_action: REJECT_REQUEST); the plugin answers 400
// for all of them whatever Envoy did.
var ErrBadPath = errors.New("the request path cannot be normalised")

// NormalizePath is the path the plugin decides on: the path part of raw
// (the query cut off) normalised as Envoy's listener does with
// normalize_path and merge_slashes. Percent-encoded unreserved characters
// (ALPHA DIGIT - . _ ~) are decoded, other escapes keep their encoding with
// upper-case hex, runs of slashes become one, and the dot segments "." and
// ".." are removed (RFC 3986 section 5.2.4, a ".." above the root stays at
// the root). The plugin normalises even though Envoy already did, so that a
// listener configured without normalisation still cannot route a partner
// past a feature gate: //reports, /./reports, /%72eports and /x/../reports
// all decide as /reports.
func NormalizePath(raw string) (string, error) {
	path, _, _ := strings.Cut(raw, "?")
	if path == "" || path[0] != '/' || strings.ContainsRune(path, '#') {
		return "", ErrBadPath
	}
	if normal(path) {
		return path, nil
	}
	var b strings.Builder
	b.Grow(len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c < 0x21 || c >= 0x7f || c == '\\':
			return "", ErrBadPath
		case c == '%':
			if i+2 >= len(path) {
				return "", ErrBadPath
			}
			hi, ok1 := unhex(path[i+1])
			lo, ok2 := unhex(path[i+2])
			if !ok1 || !ok2 {
				return "", ErrBadPath
			}
			v := hi<<4 | lo
			switch {
			case unreserved(v):
				b.WriteByte(v)
			case v == '/' || v == '\\':
				return "", ErrBadPath
			default:
				const hexdigits = "0123456789ABCDEF"
				b.WriteByte('%')
				b.WriteByte(hexdigits[v>>4])
				b.WriteByte(hexdigits[v&0xf])
			}
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return removeDotSegments(b.String()), nil
}

// normal reports whether path is already normalised: printable ASCII
// without escapes, backslashes, empty segments or dot segments (what Envoy
// forwards after its own normalisation), so it needs no rewriting.
func normal(path string) bool {
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c < 0x21 || c >= 0x7f || c == '%' || c == '\\':
			return false
		case c == '/':
			if i+1 < len(path) && path[i+1] == '/' {
				return false
			}
		case c == '.' && path[i-1] == '/':
			end := i + 1
			if end < len(path) && path[end] == '.' {
				end++
			}
			if end == len(path) || path[end] == '/' {
				return false
			}
		}
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments merges slashes and resolves "." and ".." segments of an
// absolute path. A trailing "." or ".." leaves a trailing slash, as RFC 3986
// does.
func removeDotSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "":
			trailing = last && len(out) > 0
			continue
		case ".":
			trailing = last
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
			continue
		}
		out = append(out, s)
		trailing = false
	}
	res := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		res += "/"
	}
	return res
}

// featureFor returns the feature flag gating the normalised path, if any:
// the longest matching prefix of partner.gateway.feature_routes, compared
// without regard to case (an upstream that treats /REPORTS as /reports must
// not open a gate either).
func (s *Server) featureFor(path string) (string, bool) {
	best, feature := -1, ""
	for _, fr := range s.cfg.Gateway.FeatureRoutes {
		if len(path) >= len(fr.Prefix) && strings.EqualFold(path[:len(fr.Prefix)], fr.Prefix) && len(fr.Prefix) > best {
			best, feature = len(fr.Prefix), fr.Feature
		}
	}
	return feature, best >= 0
}
