package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWriteJSON(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	WriteJSON(rec, http.StatusCreated, map[string]int{"n": 1})
	if rec.Code != http.StatusCreated || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	var got map[string]int
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got["n"] != 1 {
		t.Fatalf("%s: %v", rec.Body, err)
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, ctype, body string
		status            int
	}{
		{"ok", "application/json; charset=utf-8", `{"a":1}`, 0},
		{"content type", "text/plain", `{"a":1}`, http.StatusUnsupportedMediaType},
		{"unknown field", "application/json", `{"b":1}`, http.StatusBadRequest},
		{"trailing", "application/json", `{"a":1} {}`, http.StatusBadRequest},
		{"too large", "application/json", `{"a":1,"s":"` + strings.Repeat("x", MaxBody) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader(c.body))
			req.Header.Set("Content-Type", c.ctype)
			rec := httptest.NewRecorder()
			var v struct {
				A int    `json:"a"`
				S string `json:"s"`
			}
			ok := DecodeJSON(rec, req, &v)
			if c.status == 0 {
				if !ok || v.A != 1 {
					t.Fatalf("want decoded, got %v %d %s", ok, rec.Code, rec.Body)
				}
				return
			}
			if ok || rec.Code != c.status || rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("want %d problem, got %v %d %s", c.status, ok, rec.Code, rec.Header().Get("Content-Type"))
			}
		})
	}
}
