package webhooks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"

	"github.com/partners-engine/partners-engine/schemas"
)

// Payload versions an endpoint may pin (Endpoint.SchemaVersion). Version "1"
// is the event envelope without its routing field tenant_id:
//
//	{"schema_version":"1","id":…,"type":…,"source":…,"occurred_at":…,"data":{…}}
//
// A new payload version is added here, never changed: partners pin one.
var payloadVersions = map[string]bool{"1": true}

// ErrRender marks a payload that cannot be rendered for an endpoint: a
// permanent failure of that delivery (dead-lettered with the reason).
var ErrRender = errors.New("cannot render payload")

// payloadV1 is the version-1 payload. Field order is fixed, so rendering is
// deterministic.
type payloadV1 struct {
	SchemaVersion string          `json:"schema_version"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Source        string          `json:"source,omitempty"`
	OccurredAt    time.Time       `json:"occurred_at"`
	Data          json.RawMessage `json:"data"`
}

// DefaultMaxPayload is Render's bound on the rendered body
// (partner.webhooks.max_payload_bytes).
const DefaultMaxPayload = 256 << 10

// Render returns the body sent to ep for ev, at most DefaultMaxPayload
// bytes. The same inputs always give the same bytes; the processor renders
// once per (event, endpoint) and carries the bytes through retries and the
// DLQ, so a later mapping change never alters a webhook-id's content.
func Render(ev *schemas.Event, ep schemas.Endpoint) ([]byte, error) {
	return render(ev, ep, DefaultMaxPayload)
}

// render is Render with an explicit bound on the body.
func render(ev *schemas.Event, ep schemas.Endpoint, maxBytes int) ([]byte, error) {
	v := ep.SchemaVersion
	if v == "" {
		v = schemas.SchemaVersion
	}
	if !payloadVersions[v] {
		return nil, fmt.Errorf("%w: endpoint %s pins payload_version %q (supported: 1)", ErrRender, ep.ID, v)
	}
	base, err := json.Marshal(payloadV1{SchemaVersion: "1", ID: ev.ID, Type: ev.Type, Source: ev.Source,
		OccurredAt: ev.OccurredAt.UTC(), Data: compactRaw(ev.Data)})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRender, err)
	}
	if ep.Mapping == nil {
		if len(base) > maxBytes {
			return nil, fmt.Errorf("%w: payload of %d bytes exceeds max_payload_bytes %d", ErrRender, len(base), maxBytes)
		}
		return base, nil
	}
	return applyMapping(base, ep.Mapping, maxBytes)
}

func compactRaw(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("{}")
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// ApplyMapping transforms a version-1 payload with a declarative mapping,
// bounded to DefaultMaxPayload bytes.
func ApplyMapping(payload []byte, m *schemas.FieldMapping) ([]byte, error) {
	return applyMapping(payload, m, DefaultMaxPayload)
}

// applyMapping renders a mapping whose output is at most maxBytes: the
// size of every copied value is added up before anything is marshalled, so
// a mapping that copies a large field many times fails fast instead of
// building a huge body (a 20,000-field mapping once rendered 4 GB).
func applyMapping(payload []byte, m *schemas.FieldMapping, maxBytes int) ([]byte, error) {
	if !schemas.MappingVersions[m.Version] {
		return nil, fmt.Errorf("%w: mapping version %d (supported: 1)", ErrRender, m.Version)
	}
	if len(m.Fields) == 0 {
		return nil, fmt.Errorf("%w: mapping has no fields", ErrRender)
	}
	if len(m.Fields) > schemas.MaxMappingFields {
		return nil, fmt.Errorf("%w: mapping has %d fields (at most %d)", ErrRender, len(m.Fields), schemas.MaxMappingFields)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber() // keep numbers exactly as the producer wrote them
	var src map[string]any
	if err := dec.Decode(&src); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRender, err)
	}
	outs := make([]string, 0, len(m.Fields))
	for k := range m.Fields {
		outs = append(outs, k)
	}
	sort.Strings(outs)
	out := map[string]any{}
	size := 2
	for _, field := range outs {
		path := m.Fields[field]
		if field == "" || path == "" {
			return nil, fmt.Errorf("%w: mapping field %q -> %q: empty name or path", ErrRender, field, path)
		}
		v, ok := lookup(src, path)
		if !ok {
			continue
		}
		size += len(field) + 4 + jsonSize(v)
		if size > maxBytes {
			return nil, fmt.Errorf("%w: mapping output exceeds max_payload_bytes %d", ErrRender, maxBytes)
		}
		if err := set(out, field, v); err != nil {
			return nil, fmt.Errorf("%w: mapping field %q: %v", ErrRender, field, err)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRender, err)
	}
	if len(b) > maxBytes {
		return nil, fmt.Errorf("%w: mapping output exceeds max_payload_bytes %d", ErrRender, maxBytes)
	}
	return b, nil
}

// jsonSize estimates the marshalled size of a decoded JSON value from
// above (strings count every byte as if escaped once), without marshalling.
func jsonSize(v any) int {
	switch x := v.(type) {
	case string:
		return len(x) + 2 + len(x)/8
	case json.Number:
		return len(x)
	case bool:
		return 5
	case nil:
		return 4
	case []any:
		n := 2
		for _, e := range x {
			n += jsonSize(e) + 1
		}
		return n
	case map[string]any:
		n := 2
		for k, e := range x {
			n += len(k) + 4 + jsonSize(e)
		}
		return n
	}
	return 16
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = obj[p]
		if !ok {
			return nil, false
		}
	}
	return cur, true
}

func set(m map[string]any, field string, v any) error {
	parts := strings.Split(field, ".")
	cur := m
	for _, p := range parts[:len(parts)-1] {
		next, ok := cur[p]
		if !ok {
			n := map[string]any{}
			cur[p] = n
			cur = n
			continue
		}
		nm, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("%q is both a value and an object", p)
		}
		cur = nm
	}
	last := parts[len(parts)-1]
	if _, dup := cur[last]; dup {
		return fmt.Errorf("%q is both a value and an object", last)
	}
	cur[last] = v
	return nil
}

// filters compiles endpoint CEL filters once and caches the programs. A
// filter sees the event as `event` (schema_version, id, type, source,
// occurred_at, tenant_id, data) and must return a bool, e.g.
// `event.type == "order.completed" && double(event.data.total) > 100.0`.
type filters struct {
	env *cel.Env
	mu  sync.Mutex
	m   map[string]filterProg
}

type filterProg struct {
	prg cel.Program
	err error
}

func newFilters() (*filters, error) {
	env, err := cel.NewEnv(cel.Variable("event", cel.DynType))
	if err != nil {
		return nil, err
	}
	return &filters{env: env, m: map[string]filterProg{}}, nil
}

// Compile returns the program of expr, or why it does not compile.
func (f *filters) Compile(expr string) (cel.Program, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.m[expr]; ok {
		return p.prg, p.err
	}
	var fp filterProg
	ast, iss := f.env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		fp.err = fmt.Errorf("filter does not compile: %w", iss.Err())
	} else if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		fp.err = fmt.Errorf("filter returns %v, want bool", ast.OutputType())
	} else {
		fp.prg, fp.err = f.env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(100_000))
	}
	if len(f.m) > 10_000 { // bounded: filters come from tenants
		clear(f.m)
	}
	f.m[expr] = fp
	return fp.prg, fp.err
}

// Match evaluates expr on the decoded event. An evaluation error (a missing
// field, a wrong type) is "no match": the filter did not select the event.
func (f *filters) Match(expr string, event map[string]any) (bool, error) {
	prg, err := f.Compile(expr)
	if err != nil {
		return false, err
	}
	out, _, err := prg.Eval(map[string]any{"event": event})
	if err != nil {
		return false, nil
	}
	b, ok := out.Value().(bool)
	return ok && b, nil
}
