// Package httpx holds the JSON plumbing every HTTP handler of partners-engine
// shares (admin API, DLQ, ROI, webhook test): responses written one way, and
// request bodies decoded strictly. Errors are problem details
// (internal/problem).
package httpx

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"

	"github.com/partners-engine/partners-engine/internal/problem"
)

// MaxBody is the largest JSON request body DecodeJSON reads.
const MaxBody = 1 << 20

// WriteJSON writes v as indented JSON with status; responses are never
// cached (they carry tenant data).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// DecodeJSON decodes a JSON request body strictly (unknown fields are
// errors, MaxBody at most), writing a problem and returning false on
// failure: 415 for another content type, 413 for a body over MaxBody, 400
// for malformed JSON or trailing data.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		problem.Error(w, r, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			problem.Error(w, r, http.StatusRequestEntityTooLarge, "request body over 1 MiB")
			return false
		}
		problem.Error(w, r, http.StatusBadRequest, "malformed JSON body: "+err.Error())
		return false
	}
	if dec.More() {
		problem.Error(w, r, http.StatusBadRequest, "malformed JSON body: trailing data")
		return false
	}
	return true
}
