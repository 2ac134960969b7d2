package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Kinds of record Validate knows, each backed by json/<kind>.v1.schema.json.
const (
	KindEvent           = "event"
	KindTouchpoint      = "touchpoint"
	KindConversion      = "conversion"
	KindCost            = "cost"
	KindDeliveryAttempt = "delivery-attempt"
	KindDeadLetter      = "dead-letter"
	KindTenant          = "tenant"
)

// Kinds returns every kind Validate accepts, sorted.
func Kinds() []string {
	k := []string{KindEvent, KindTouchpoint, KindConversion, KindCost, KindDeliveryAttempt, KindDeadLetter, KindTenant}
	sort.Strings(k)
	return k
}

// SchemaFile returns the path of kind's schema inside JSONSchemas.
func SchemaFile(kind string) string { return "json/" + kind + ".v" + SchemaVersion + ".schema.json" }

// ErrInvalid is matched (errors.Is) by every error Validate returns for a
// document that does not conform: the input is bad, retrying cannot help, it
// belongs in a dead-letter queue with the error as its reason.
var ErrInvalid = errors.New("invalid record")

// maxProblems bounds how many violations an error lists: enough to fix a
// producer, short enough for a log line or a DLQ reason.
const maxProblems = 3

// InvalidError says why a document does not conform to its schema. Its
// message is short and names JSON Pointer locations, e.g.
// `conversion: at /amount: does not match pattern ^-?[0-9]{1,14}(\.[0-9]{1,4})?$`.
// It never echoes field values, which may be personal data.
type InvalidError struct {
	Kind     string
	Problems []string // "at <pointer>: <what>", sorted by location
}

func (e *InvalidError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind)
	b.WriteString(": ")
	n := min(len(e.Problems), maxProblems)
	b.WriteString(strings.Join(e.Problems[:n], "; "))
	if more := len(e.Problems) - n; more > 0 {
		fmt.Fprintf(&b, " (and %d more)", more)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

var compiled struct {
	once    sync.Once
	schemas map[string]*jsonschema.Schema
	err     error
}

func compileAll() (map[string]*jsonschema.Schema, error) {
	compiled.once.Do(func() {
		compiled.schemas, compiled.err = compile(JSONSchemas)
	})
	return compiled.schemas, compiled.err
}

// compile compiles the schema of every kind from fsys. Formats (date-time,
// uri) and content (base64) are asserted, not just annotations.
func compile(fsys fs.FS) (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	ids := map[string]string{}
	for _, k := range Kinds() {
		file := SchemaFile(k)
		b, err := fs.ReadFile(fsys, file)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", k, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", file, err)
		}
		// Register under the schema's own $id so it is compiled under the
		// URL it declares and never fetched.
		id := "file:///" + file
		if m, ok := doc.(map[string]any); ok {
			if s, ok := m["$id"].(string); ok && s != "" {
				id = s
			}
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", file, err)
		}
		ids[k] = id
	}
	out := make(map[string]*jsonschema.Schema, len(ids))
	for k, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", SchemaFile(k), err)
		}
		out[k] = s
	}
	return out, nil
}

// Validate checks doc, one JSON document, against the v1 schema of kind (see
// Kinds). It returns nil when doc conforms, an *InvalidError (matching
// ErrInvalid) when it does not or is not JSON, and a plain error for an
// unknown kind, which is a programming error. Schemas are compiled once, on
// first use; Validate is safe for concurrent use.
func Validate(kind string, doc []byte) error {
	all, err := compileAll()
	if err != nil {
		return fmt.Errorf("schemas: %w", err)
	}
	s, ok := all[kind]
	if !ok {
		return fmt.Errorf("schemas: unknown kind %q (want one of %s)", kind, strings.Join(Kinds(), ", "))
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return &InvalidError{Kind: kind, Problems: []string{"not JSON: " + err.Error()}}
	}
	err = s.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &InvalidError{Kind: kind, Problems: []string{err.Error()}}
	}
	return &InvalidError{Kind: kind, Problems: problems(ve)}
}

var printer = message.NewPrinter(language.English)

// problems flattens the error tree to its leaves, the violations a producer
// has to fix; the inner nodes only say "validation failed".
func problems(ve *jsonschema.ValidationError) []string {
	var out []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, "at "+pointer(e.InstanceLocation)+": "+describe(e.ErrorKind))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Strings(out)
	return dedupe(out)
}

// describe words a violation without the offending value.
func describe(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Pattern:
		return "does not match pattern " + k.Want
	case *kind.Format:
		return "is not a valid " + k.Want
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = jsonValue(w)
		}
		return "must be one of " + strings.Join(want, ", ")
	case *kind.Const:
		return fmt.Sprintf("must be %v", jsonValue(k.Want))
	case *kind.ContentEncoding:
		return "is not " + k.Want + " encoded"
	case *kind.MinLength:
		if k.Want == 1 {
			return "must not be empty"
		}
		return k.LocalizedString(printer)
	case *kind.FalseSchema:
		return "is not allowed"
	default:
		return k.LocalizedString(printer)
	}
}

func jsonValue(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

func pointer(tokens []string) string {
	if len(tokens) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
