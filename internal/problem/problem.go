// Package problem writes RFC 9457 problem details, the one error format of
// every HTTP API of partners-engine (admin API, analytics, edge denials).
package problem

import (
	"encoding/json"
	"net/http"
)

// ContentType of a problem body.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem. Field names the invalid request field.
type Details struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Field    string `json:"field,omitempty"`
}

// New returns a problem whose type is a stable URN derived from the status.
func New(status int, detail string) Details {
	return Details{
		Type:   "urn:partners-engine:problem:" + slug(status),
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	}
}

// JSON returns the problem's body.
func (d Details) JSON() []byte {
	b, _ := json.Marshal(d)
	return b
}

// Write sends the problem.
func Write(w http.ResponseWriter, r *http.Request, d Details) {
	if r != nil && d.Instance == "" {
		d.Instance = r.URL.Path
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(d.Status)
	_, _ = w.Write(d.JSON())
}

// Error writes a problem with status and detail.
func Error(w http.ResponseWriter, r *http.Request, status int, detail string) {
	Write(w, r, New(status, detail))
}

func slug(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid-request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not-found"
	case http.StatusConflict:
		return "conflict"
	case http.StatusUnsupportedMediaType:
		return "unsupported-media-type"
	case http.StatusRequestEntityTooLarge:
		return "too-large"
	case http.StatusTooManyRequests:
		return "rate-limited"
	case http.StatusServiceUnavailable:
		return "unavailable"
	default:
		if status >= 500 {
			return "internal"
		}
		return "error"
	}
}
