package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Decoding works on the parsed YAML tree, never on the text: the file is
// parsed first, then one walk over the yaml.Node tree, led by the Go type of
// the target, does everything before the decode itself:
//
//   - expands ${env:NAME} and ${env:NAME:-default} in scalar values (not in
//     keys), so an environment value is always one scalar's text: it cannot
//     add keys or list items, and a '#' or a quote in it stays as it is;
//   - refuses unknown keys, naming their full key path;
//   - checks the type of every scalar (integer, number, boolean, duration)
//     and names the key path and value when it does not fit;
//   - turns the unit-suffixed numbers of the seed's keys
//     (tenant_resolution_ttl_sec: 45, upstream_timeout_ms: 250,
//     retention_days: 30) into time.Duration fields.
//
// The tree is then decoded into the defaults with yaml.v3.

// placeholder matches ${env:NAME} and ${env:NAME:-default}; $${ escapes a
// literal ${.
var placeholder = regexp.MustCompile(`\$?\$\{env:([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// ExpandValue replaces the placeholders of one scalar value using lookup:
// ${env:NAME} is NAME's value ("" when unset), ${env:NAME:-default} is
// NAME's value, or default when NAME is unset or empty. $${env:...} is the
// literal text ${env:...}. It returns the names of the variables consulted.
func ExpandValue(s string, lookup func(string) (string, bool)) (string, []string) {
	var names []string
	out := placeholder.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "$$") {
			return m[1:]
		}
		sub := placeholder.FindStringSubmatch(m)
		names = append(names, sub[1])
		if v, ok := lookup(sub[1]); ok && v != "" {
			return v
		}
		return sub[3]
	})
	return out, names
}

var durationType = reflect.TypeOf(time.Duration(0))

// durationUnit is the unit a key's numbers are in, from its name: the
// seed's keys carry it as a suffix. A duration key without a suffix takes
// Go duration strings ("1m30s") only.
func durationUnit(key string) (time.Duration, string) {
	switch {
	case strings.HasSuffix(key, "_ms"):
		return time.Millisecond, "milliseconds"
	case strings.HasSuffix(key, "_sec"):
		return time.Second, "seconds"
	case strings.HasSuffix(key, "_days"):
		return 24 * time.Hour, "days"
	}
	return 0, ""
}

type decoder struct {
	lookup   func(string) (string, bool)
	problems []string
	// sources maps a key path to the placeholder text its value came from
	// (for error messages that say which variable to set).
	sources  map[string]string
	expanded map[*yaml.Node]bool
}

func (d *decoder) fail(path string, n *yaml.Node, value, why string) {
	if n != nil && n.Line > 0 {
		why = fmt.Sprintf("%s (line %d)", why, n.Line)
	}
	d.problems = append(d.problems, fmt.Sprintf("%s: %s (got %q)", path, why, value))
}

// expand expands the placeholders of a scalar node once (an alias may
// reach the same node twice) and reports whether it held any.
func (d *decoder) expand(n *yaml.Node, path string) bool {
	if d.expanded[n] || !strings.Contains(n.Value, "${env:") {
		return false
	}
	d.expanded[n] = true
	v, names := ExpandValue(n.Value, d.lookup)
	if len(names) == 0 {
		n.Value = v // only escapes
		return false
	}
	d.sources[path] = n.Value
	n.Value = v
	// The value is text now, whatever it looks like: the type walk below
	// decides what it must parse as.
	n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
	return true
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func keyName(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// walk checks n against t, rewriting scalars in place.
func (d *decoder) walk(n *yaml.Node, t reflect.Type, path, key string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) > 0 {
			d.walk(n.Content[0], t, path, key)
		}
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		d.duration(n, path, key)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		d.mapping(n, t, path, func(k string) (reflect.Type, bool) {
			f, ok := fieldByKey(t, k)
			if !ok {
				return nil, false
			}
			return f.Type, true
		}, func() []string { return keysOf(t) })
	case reflect.Map:
		d.mapping(n, t, path, func(string) (reflect.Type, bool) { return t.Elem(), true }, nil)
	case reflect.Slice:
		d.sequence(n, t, path, key)
	default:
		d.scalar(n, t, path)
	}
}

func (d *decoder) mapping(n *yaml.Node, t reflect.Type, path string, field func(string) (reflect.Type, bool), known func() []string) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, n.Value, "must be a mapping")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			// A merge key (<<: *base) brings another mapping's keys in:
			// they are checked as this mapping's.
			if v.Kind == yaml.SequenceNode {
				for _, m := range v.Content {
					d.walk(m, t, path, "")
				}
			} else {
				d.walk(v, t, path, "")
			}
			continue
		}
		ft, ok := field(k.Value)
		if !ok {
			hint := ""
			if known != nil {
				hint = "; known keys: " + strings.Join(known(), ", ")
			}
			d.problems = append(d.problems, fmt.Sprintf("%s: unknown key (line %d): field %s not found%s",
				keyName(path, k.Value), k.Line, k.Value, hint))
			continue
		}
		d.walk(v, ft, keyName(path, k.Value), k.Value)
	}
}

func (d *decoder) sequence(n *yaml.Node, t reflect.Type, path, key string) {
	if isNull(n) {
		return
	}
	strs := t.Elem().Kind() == reflect.String
	if n.Kind == yaml.ScalarNode && strs {
		// A list of strings may be given as one scalar, typically a
		// placeholder: brokers: ${env:PARTNERS_KAFKA_BROKERS:-}.
		item := *n
		*n = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: n.Line, Column: n.Column, Content: []*yaml.Node{&item}}
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, n.Value, "must be a list")
		return
	}
	if strs {
		// Items from placeholders are split on commas, and empty ones
		// dropped, so one variable can carry a list ("a:9092,b:9092") or
		// nothing. The split happens on the expanded text: a comma is the
		// only structure an environment value can carry, and only here.
		var items []*yaml.Node
		for _, it := range n.Content {
			for it.Kind == yaml.AliasNode && it.Alias != nil {
				it = it.Alias
			}
			if it.Kind != yaml.ScalarNode || !d.expand(it, path) {
				items = append(items, it)
				continue
			}
			for _, part := range strings.Split(it.Value, ",") {
				if part = strings.TrimSpace(part); part != "" {
					c := *it
					c.Value = part
					items = append(items, &c)
				}
			}
		}
		n.Content = items
	}
	for i, it := range n.Content {
		d.walk(it, t.Elem(), fmt.Sprintf("%s[%d]", path, i), key)
	}
}

func (d *decoder) scalar(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n, "", "must be a single value, not a list or mapping")
		return
	}
	fromEnv := d.expand(n, path)
	if t.Kind() == reflect.String {
		if fromEnv || !isNull(n) {
			n.Tag, n.Style = "!!str", yaml.DoubleQuotedStyle
		}
		return
	}
	if isNull(n) || fromEnv && n.Value == "" {
		// Unset: the default stays.
		n.Tag, n.Value = "!!null", ""
		return
	}
	v := n.Value
	switch t.Kind() {
	case reflect.Bool:
		b, err := strconv.ParseBool(v)
		if err != nil || (v != "true" && v != "false") {
			d.fail(path, n, v, "must be true or false")
			return
		}
		n.Tag, n.Value = "!!bool", strconv.FormatBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 0, t.Bits())
		if err != nil {
			d.fail(path, n, v, "must be an integer")
			return
		}
		n.Tag, n.Value = "!!int", strconv.FormatInt(i, 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(strings.ReplaceAll(v, "_", ""), 0, t.Bits())
		if err != nil {
			d.fail(path, n, v, "must be a non-negative integer")
			return
		}
		n.Tag, n.Value = "!!int", strconv.FormatUint(u, 10)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(v, t.Bits())
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(path, n, v, "must be a number")
			return
		}
		n.Tag, n.Value = "!!float", strconv.FormatFloat(f, 'g', -1, t.Bits())
	}
}

// duration accepts, for a key with a unit suffix, a number in that unit
// (the seed's form: backoff_base_sec: 0.5) or a Go duration string
// ("500ms"); without a suffix, a Go duration string only.
func (d *decoder) duration(n *yaml.Node, path, key string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n, "", "must be a duration")
		return
	}
	fromEnv := d.expand(n, path)
	if isNull(n) || fromEnv && n.Value == "" {
		n.Tag, n.Value = "!!null", ""
		return
	}
	unit, unitName := durationUnit(key)
	v := strings.TrimSpace(n.Value)
	var dur time.Duration
	if f, err := strconv.ParseFloat(v, 64); err == nil && unit != 0 {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f*float64(unit)) > math.MaxInt64 {
			d.fail(path, n, v, "must be a finite number of "+unitName)
			return
		}
		dur = time.Duration(math.Round(f * float64(unit)))
	} else if pd, err := time.ParseDuration(v); err == nil {
		dur = pd
	} else {
		why := `must be a duration like "1m30s"`
		if unit != 0 {
			why = "must be a number of " + unitName + ` or a duration like "1m30s"`
		}
		d.fail(path, n, v, why)
		return
	}
	n.Tag, n.Style, n.Value = "!!str", yaml.DoubleQuotedStyle, dur.String()
}

// fieldByKey finds the struct field whose yaml key is k.
func fieldByKey(t reflect.Type, k string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, ok := yamlKey(f); ok && name == k {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// yamlKey is a field's YAML key (its yaml tag's name), and false for
// unexported and skipped fields.
func yamlKey(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	tag := f.Tag.Get("yaml")
	if tag == "-" {
		return "", false
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, true
}

func keysOf(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		if k, ok := yamlKey(t.Field(i)); ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// decodeInto parses b and decodes it over out (which holds the defaults).
func decodeInto(b []byte, out any, lookup func(string) (string, bool)) (map[string]string, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]string{}, nil
		}
		msg := err.Error()
		if strings.Contains(string(b), "${env:") && (strings.Contains(msg, "did not find expected ','") || strings.Contains(msg, "did not find expected '}'")) {
			msg += ` (a ${env:...} placeholder inside [ ] or { } must be quoted: ["${env:NAME:-default}"])`
		}
		return nil, fmt.Errorf("config: %s", msg)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: more than one YAML document")
	}
	d := &decoder{lookup: lookup, sources: map[string]string{}, expanded: map[*yaml.Node]bool{}}
	d.walk(&root, reflect.TypeOf(out), "", "")
	if len(d.problems) > 0 {
		slices.Sort(d.problems)
		return nil, &ValidationError{Problems: d.problems}
	}
	if err := root.Decode(out); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return d.sources, nil
}
