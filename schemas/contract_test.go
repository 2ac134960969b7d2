package schemas

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// goTypes maps every kind to a constructor of its Go type.
var goTypes = map[string]func() any{
	KindEvent:           func() any { return new(Event) },
	KindTouchpoint:      func() any { return new(Touchpoint) },
	KindConversion:      func() any { return new(Conversion) },
	KindCost:            func() any { return new(Cost) },
	KindDeliveryAttempt: func() any { return new(DeliveryAttempt) },
	KindDeadLetter:      func() any { return new(DeadLetter) },
	KindTenant:          func() any { return new(Tenant) },
}

func TestKindsHaveSchemasTypesAndExamples(t *testing.T) {
	if got, want := len(goTypes), len(Kinds()); got != want {
		t.Fatalf("goTypes has %d kinds, Kinds() %d", got, want)
	}
	files, err := fs.Glob(JSONSchemas, "json/*.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, k := range Kinds() {
		if goTypes[k] == nil {
			t.Errorf("kind %s: no Go type in goTypes", k)
		}
		want = append(want, SchemaFile(k))
		doc := readSchema(t, k)
		if id, _ := doc["$id"].(string); !strings.HasSuffix(id, "/"+SchemaFile(k)) {
			t.Errorf("%s: $id %q does not end in /%s", SchemaFile(k), id, SchemaFile(k))
		}
		if s := doc["$schema"]; s != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema %v, want draft 2020-12", SchemaFile(k), s)
		}
	}
	sort.Strings(files)
	sort.Strings(want)
	if !slices.Equal(files, want) {
		t.Errorf("schema files %v, want exactly %v (one per kind)", files, want)
	}
	dirs, err := os.ReadDir("examples")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		// mappings/ holds the webhook payload-mapping contracts, checked by
		// processors/webhooks (TestMappingContracts).
		if d.IsDir() && goTypes[d.Name()] == nil && d.Name() != "mappings" {
			t.Errorf("examples/%s: not a kind (want one of %v)", d.Name(), Kinds())
		}
	}
}

func TestValidExamples(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(k, func(t *testing.T) {
			files, err := filepath.Glob(filepath.Join("examples", k, "*.json"))
			if err != nil {
				t.Fatal(err)
			}
			if len(files) < 2 {
				t.Fatalf("examples/%s: %d valid examples, want at least 2", k, len(files))
			}
			for _, f := range files {
				t.Run(filepath.Base(f), func(t *testing.T) {
					orig, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					if err := Validate(k, orig); err != nil {
						t.Fatalf("valid example rejected: %v", err)
					}
					// Round trip through the Go type: what a consumer decodes and
					// re-publishes must still conform and mean the same thing.
					v := goTypes[k]()
					dec := json.NewDecoder(bytes.NewReader(orig))
					dec.DisallowUnknownFields() // a schema property the Go type lacks
					if err := dec.Decode(v); err != nil {
						t.Fatalf("decode into %T: %v", v, err)
					}
					out, err := json.Marshal(v)
					if err != nil {
						t.Fatalf("marshal %T: %v", v, err)
					}
					if err := Validate(k, out); err != nil {
						t.Fatalf("re-marshalled %T rejected: %v\n%s", v, err, out)
					}
					a, b := normalized(t, orig), normalized(t, out)
					if !reflect.DeepEqual(a, b) {
						t.Errorf("round trip through %T changed the record:\n  before %v\n  after  %v", v, a, b)
					}
				})
			}
		})
	}
}

// normalized decodes a record for semantic comparison: decimal amounts by
// value ("129.90" = "129.9"), times by instant, numbers by value. Free-form
// content (event data, dead-letter payload) is compared exactly.
func normalized(t *testing.T, doc []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	var norm func(key string, v any) any
	norm = func(key string, v any) any {
		switch x := v.(type) {
		case map[string]any:
			if key == "data" || key == "payload" {
				return x
			}
			for k, e := range x {
				x[k] = norm(k, e)
			}
		case []any:
			for i, e := range x {
				x[i] = norm(key, e)
			}
		case json.Number:
			f, err := x.Float64()
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			return f
		case string:
			switch {
			case key == "amount":
				d, err := decimal.NewFromString(x)
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				return "decimal:" + d.String()
			case strings.HasSuffix(key, "_at"):
				ts, err := time.Parse(time.RFC3339Nano, x)
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				return "time:" + ts.UTC().Format(time.RFC3339Nano)
			}
		}
		return v
	}
	return norm("", v)
}

// expectations reads examples/invalid.txt.
func expectations(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("examples", "invalid.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, reason, ok := strings.Cut(line, ": ")
		if !ok || reason == "" {
			t.Fatalf("invalid.txt:%d: want `file: reason`, got %q", n, line)
		}
		if _, dup := out[file]; dup {
			t.Fatalf("invalid.txt:%d: %s listed twice", n, file)
		}
		out[file] = reason
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInvalidExamples(t *testing.T) {
	want := expectations(t)
	files, err := filepath.Glob(filepath.Join("examples", "*", "invalid", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		rel := filepath.ToSlash(strings.TrimPrefix(f, "examples"+string(filepath.Separator)))
		seen[rel] = true
		t.Run(rel, func(t *testing.T) {
			reason, ok := want[rel]
			if !ok {
				t.Fatalf("no expected reason in examples/invalid.txt")
			}
			doc, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			k := strings.SplitN(rel, "/", 2)[0]
			err = Validate(k, doc)
			if err == nil {
				t.Fatalf("invalid example accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not match ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, reason) {
				t.Errorf("error %q does not contain %q", msg, reason)
			}
			if strings.Contains(msg, "\n") || len(msg) > 300 {
				t.Errorf("error is not one short line: %q", msg)
			}
		})
	}
	for rel := range want {
		if !seen[rel] {
			t.Errorf("examples/invalid.txt names %s, which does not exist", rel)
		}
	}
}

// TestGoRecordsValidate marshals records built in Go, including zero values
// the Go type emits that hand-written examples never contain (nil slices as
// null, zero times), so what producers actually send conforms.
func TestGoRecordsValidate(t *testing.T) {
	at := time.Date(2025, 3, 14, 9, 26, 53, 589_000_000, time.UTC)
	tests := []struct {
		kind string
		v    any
	}{
		{KindEvent, Event{SchemaVersion: SchemaVersion, ID: "e1", Type: "order.completed", OccurredAt: at, Data: json.RawMessage(`{"a":1}`)}},
		{KindTouchpoint, Touchpoint{SchemaVersion: SchemaVersion, ID: "t1", UserID: "u1", PartnerID: "p1", Source: SourceReferral, OccurredAt: at}},
		{KindConversion, Conversion{SchemaVersion: SchemaVersion, ID: "c1", UserID: "u1", Kind: ConversionPurchase,
			Amount: decimal.RequireFromString("19.99"), Currency: "EUR", OccurredAt: at}},
		{KindConversion, Conversion{SchemaVersion: SchemaVersion, ID: "c2", UserID: "u1", Kind: ConversionRefund,
			Amount: decimal.RequireFromString("-19.99"), Currency: "EUR", RefundOf: "c1", OccurredAt: at}},
		{KindCost, Cost{SchemaVersion: SchemaVersion, ID: "k1", PartnerID: "p1", Amount: decimal.New(25, 0), Currency: "USD", OccurredAt: at}},
		{KindDeliveryAttempt, DeliveryAttempt{SchemaVersion: SchemaVersion, ID: "d1/1", DeliveryID: "d1", TenantID: "t", EndpointID: "e",
			EventID: "e1", EventType: "x", Attempt: 1, StatusCode: 0, Outcome: OutcomeSkipped, AttemptedAt: at}},
		{KindDeadLetter, DeadLetter{SchemaVersion: SchemaVersion, Reason: "not JSON", SourceTopic: TopicConversions, Raw: []byte{0xff, 0x00}}},
		{KindDeadLetter, DeadLetter{SchemaVersion: SchemaVersion, DeliveryID: "d1", Attempts: 5, LastStatus: 503, Reason: "attempts exhausted",
			FirstAttemptAt: at, LastAttemptAt: at.Add(time.Hour), Payload: json.RawMessage(`{"id":"e1"}`)}},
		{KindTenant, Tenant{SchemaVersion: SchemaVersion, ID: "t1", Name: "T", Tier: TierSandbox, Status: StatusPending,
			CreatedAt: at, UpdatedAt: at, Version: 1}}, // nil Regions, Keys, Endpoints: null
		{KindTenant, Tenant{SchemaVersion: SchemaVersion, ID: "t2", Name: "T", Tier: TierEnterprise, Status: StatusActive,
			Regions: []string{"eu"}, RateLimit: &RateLimit{RequestsPerMinute: 300, BurstSize: 50},
			Keys:      []APIKey{{ID: "k", Hash: strings.Repeat("ab", 32), Prefix: "pk_ent_x", CreatedAt: at, ExpiresAt: &at}},
			Endpoints: []Endpoint{{ID: "e", URL: "https://x.example/h", Mapping: &FieldMapping{Version: 1}}}, // nil Secrets, nil Fields
			JWT:       &JWTConfig{Issuer: "https://i.example", JWKS: `{"keys":[]}`},
			CreatedAt: at, UpdatedAt: at, Version: 2}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.kind, i), func(t *testing.T) {
			b, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(tt.kind, b); err != nil {
				t.Errorf("%v\n%s", err, b)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	if err := Validate("order", []byte(`{}`)); err == nil || errors.Is(err, ErrInvalid) {
		t.Errorf("unknown kind: got %v, want a programming error that is not ErrInvalid", err)
	}
	err := Validate(KindConversion, []byte(`{"schema_version":"2","id":"","user_id":"","kind":"x",
		"amount":1,"currency":"eur","occurred_at":"yesterday","extra":1}`))
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("got %v, want *InvalidError", err)
	}
	if len(ie.Problems) <= maxProblems {
		t.Fatalf("got %d problems %q, want more than %d", len(ie.Problems), ie.Problems, maxProblems)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "conversion: at /") ||
		!strings.HasSuffix(msg, fmt.Sprintf("(and %d more)", len(ie.Problems)-maxProblems)) {
		t.Errorf("message %q: want the kind, %d problems, and a count of the rest", msg, maxProblems)
	}
	// Values may be personal data: errors name locations, never values.
	err = Validate(KindTouchpoint, []byte(`{"schema_version":"1","id":"t","user_id":"u","partner_id":"p","source":"utm",
		"occurred_at":"2025-01-01T00:00:00Z","trace_id":"jane.doe@example.com"}`))
	if err == nil || strings.Contains(err.Error(), "jane.doe") {
		t.Errorf("got %v, want an error that does not echo the value", err)
	}
}

func TestValidateConcurrent(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("examples", "conversion", "purchase.json"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := Validate(KindConversion, doc); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestSchemaMatchesGoTypes catches drift between a Go type and its schema:
// the same property names, required exactly when the field has neither
// omitempty nor omitzero, compatible JSON types, and closed objects, down
// through nested structs ($refs into $defs included).
func TestSchemaMatchesGoTypes(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(k, func(t *testing.T) {
			root := readSchema(t, k)
			typ := reflect.TypeOf(goTypes[k]()).Elem()
			checkStruct(t, typ.Name(), typ, root, root)
		})
	}
}

var (
	timeType    = reflect.TypeFor[time.Time]()
	decimalType = reflect.TypeFor[decimal.Decimal]()
	rawType     = reflect.TypeFor[json.RawMessage]()
	bytesType   = reflect.TypeFor[[]byte]()
)

func checkStruct(t *testing.T, where string, typ reflect.Type, sch, root map[string]any) {
	t.Helper()
	sch = resolve(t, where, sch, root)
	if ap, ok := sch["additionalProperties"]; !ok || ap != false {
		t.Errorf("%s: schema must set additionalProperties: false", where)
	}
	props, _ := sch["properties"].(map[string]any)
	required := map[string]bool{}
	if rs, ok := sch["required"].([]any); ok {
		for _, r := range rs {
			required[r.(string)] = true
		}
	}
	fields := map[string]bool{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		fields[name] = true
		at := where + "." + f.Name + " (" + name + ")"
		optional := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		// omitempty never omits a struct such as time.Time: it is emitted,
		// so it must be required unless omitzero is set too.
		if f.Type.Kind() == reflect.Struct && !slices.Contains(strings.Split(opts, ","), "omitzero") {
			optional = false
		}
		if optional == required[name] {
			t.Errorf("%s: Go optional=%v but schema required=%v", at, optional, required[name])
		}
		p, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s: no schema property %q", at, name)
			continue
		}
		checkType(t, at, f.Type, !optional, p, root)
	}
	for name := range props {
		if !fields[name] {
			t.Errorf("%s: schema property %q has no Go field", where, name)
		}
	}
	for name := range required {
		if props[name] == nil {
			t.Errorf("%s: required %q is not a property", where, name)
		}
	}
}

func checkType(t *testing.T, at string, ft reflect.Type, emittedWhenNil bool, p, root map[string]any) {
	t.Helper()
	p = resolve(t, at, p, root)
	if ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
		emittedWhenNil = false // optional pointers are omitted, required ones are not used
	}
	var want string
	switch {
	case ft == rawType:
		return // any JSON, constrained by the schema alone
	case ft == timeType:
		if p["format"] != "date-time" {
			t.Errorf("%s: time.Time needs format date-time, schema has %v", at, p["format"])
		}
		want = "string"
	case ft == decimalType, ft == bytesType:
		want = "string"
	case ft.Kind() == reflect.String:
		want = "string"
	case ft.Kind() == reflect.Bool:
		want = "boolean"
	case ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Uint64:
		want = "integer"
	case ft.Kind() == reflect.Float32 || ft.Kind() == reflect.Float64:
		want = "number"
	case ft.Kind() == reflect.Slice:
		want = "array"
	case ft.Kind() == reflect.Map:
		want = "object"
	case ft.Kind() == reflect.Struct:
		want = "object"
	default:
		t.Errorf("%s: Go kind %s not handled by this test", at, ft.Kind())
		return
	}
	got := schemaTypes(p)
	if len(got) == 0 {
		t.Errorf("%s: schema declares no type, const or enum", at)
		return
	}
	if !slices.Contains(got, want) && !(want == "number" && slices.Contains(got, "integer")) {
		t.Errorf("%s: Go %s is JSON %s, schema allows %v", at, ft, want, got)
	}
	// A nil slice or map in a field without omitempty marshals as null.
	if emittedWhenNil && (ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map) && ft != bytesType && !slices.Contains(got, "null") {
		t.Errorf("%s: Go emits null for a nil %s, schema allows only %v", at, ft, got)
	}
	switch {
	case ft.Kind() == reflect.Struct && ft != timeType && ft != decimalType:
		checkStruct(t, at, ft, p, root)
	case ft.Kind() == reflect.Slice && ft != bytesType:
		items, ok := p["items"].(map[string]any)
		if !ok {
			t.Errorf("%s: array without items schema", at)
			return
		}
		checkType(t, at+"[]", ft.Elem(), false, items, root)
	case ft.Kind() == reflect.Map:
		ap, ok := p["additionalProperties"].(map[string]any)
		if !ok {
			t.Errorf("%s: map without an additionalProperties schema", at)
			return
		}
		checkType(t, at+"{}", ft.Elem(), false, ap, root)
	}
}

// schemaTypes lists the JSON types a schema node allows, from type, const or enum.
func schemaTypes(p map[string]any) []string {
	switch ty := p["type"].(type) {
	case string:
		return []string{ty}
	case []any:
		var out []string
		for _, x := range ty {
			out = append(out, x.(string))
		}
		return out
	}
	var values []any
	if c, ok := p["const"]; ok {
		values = append(values, c)
	}
	if e, ok := p["enum"].([]any); ok {
		values = append(values, e...)
	}
	var out []string
	for _, v := range values {
		var ty string
		switch v.(type) {
		case string:
			ty = "string"
		case bool:
			ty = "boolean"
		case float64:
			ty = "number"
		case nil:
			ty = "null"
		default:
			ty = fmt.Sprintf("%T", v)
		}
		if !slices.Contains(out, ty) {
			out = append(out, ty)
		}
	}
	return out
}

func resolve(t *testing.T, at string, p, root map[string]any) map[string]any {
	t.Helper()
	ref, ok := p["$ref"].(string)
	if !ok {
		return p
	}
	name, ok := strings.CutPrefix(ref, "#/$defs/")
	if !ok {
		t.Fatalf("%s: $ref %q: only #/$defs/ refs are supported", at, ref)
	}
	defs, _ := root["$defs"].(map[string]any)
	d, ok := defs[name].(map[string]any)
	if !ok {
		t.Fatalf("%s: $ref %q: no such $defs entry", at, ref)
	}
	return d
}

func readSchema(t *testing.T, kind string) map[string]any {
	t.Helper()
	b, err := fs.ReadFile(JSONSchemas, SchemaFile(kind))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", SchemaFile(kind), err)
	}
	return doc
}

func BenchmarkValidate(b *testing.B) {
	for _, k := range []string{KindConversion, KindDeliveryAttempt, KindTenant} {
		files, _ := filepath.Glob(filepath.Join("examples", k, "*.json"))
		doc, err := os.ReadFile(files[0])
		if err != nil {
			b.Fatal(err)
		}
		b.Run(k, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				if err := Validate(k, doc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
