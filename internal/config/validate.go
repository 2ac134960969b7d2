package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Validator is a configuration section that checks its own fields. Every
// section of Config implements it the way opentelemetry-collector's
// component configs do: Validate checks only the section's own fields, and
// Validate (the function) walks a whole tree calling each section's. A
// section names a bad field by pointer (c.Positive(&s.CacheSize)); the walk
// turns the pointer into the field's key path from the yaml tags, so no key
// path is ever typed by hand.
type Validator interface {
	Validate() error
}

// Checker collects the problems of one section. Start one with Check.
type Checker struct {
	root     any
	problems []problem
}

type problem struct {
	field    any    // pointer to the field
	sub      string // a map key under the field, or ""
	value    any
	hasValue bool
	why      string
}

// Check starts checking section (a pointer).
func Check(section any) *Checker { return &Checker{root: section} }

// Fail records that field (a pointer into the section) is invalid.
func (c *Checker) Fail(field any, why string) {
	c.problems = append(c.problems, problem{field: field, why: why})
}

// FailValue is Fail showing value instead of the field's own value (an
// element of a list, a key of a map).
func (c *Checker) FailValue(field, value any, why string) {
	c.problems = append(c.problems, problem{field: field, value: value, hasValue: true, why: why})
}

// FailKey records that the entry key of the map field is invalid; the key
// path is the field's followed by the key.
func (c *Checker) FailKey(field any, key string, value any, why string) {
	c.problems = append(c.problems, problem{field: field, sub: key, value: value, hasValue: true, why: why})
}

// Positive requires a number or duration > 0.
func (c *Checker) Positive(field any) {
	if sign(field) <= 0 {
		c.Fail(field, "must be > 0")
	}
}

// NonNegative requires a number or duration >= 0.
func (c *Checker) NonNegative(field any) {
	if sign(field) < 0 {
		c.Fail(field, "must be >= 0")
	}
}

// Between requires lo <= *field <= hi (ints).
func (c *Checker) Between(field *int, lo, hi int) {
	if *field < lo || *field > hi {
		c.Fail(field, fmt.Sprintf("must be between %d and %d", lo, hi))
	}
}

// OneOf requires *field to be one of allowed.
func (c *Checker) OneOf(field *string, allowed ...string) {
	if !slices.Contains(allowed, *field) {
		c.Fail(field, "must be one of "+strings.Join(allowed, ", "))
	}
}

// HostPort requires host:port; an empty value is accepted unless required.
func (c *Checker) HostPort(field *string, required bool) {
	v := *field
	if v == "" && !required {
		return
	}
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		c.Fail(field, "must be host:port")
	}
}

// Port requires a TCP port number.
func (c *Checker) Port(field *int) {
	if *field <= 0 || *field > 65535 {
		c.Fail(field, "must be a port number")
	}
}

// Secret requires a secret of at least min characters; env names the
// variable that usually carries it, for the message about an empty one.
func (c *Checker) Secret(field *string, min int, env string) {
	switch {
	case *field == "":
		c.Fail(field, "is a required secret and is empty (set "+env+")")
	case len(*field) < min:
		c.Fail(field, fmt.Sprintf("must be at least %d characters", min))
	}
}

// Err returns the problems found, or nil.
func (c *Checker) Err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return &FieldErrors{root: c.root, problems: c.problems}
}

// FieldErrors are a section's problems. Its message names fields by their
// key paths relative to the section; Validate on an enclosing tree names
// them by their full paths.
type FieldErrors struct {
	root     any
	problems []problem
}

func (e *FieldErrors) Error() string {
	idx := index{}
	if e.root != nil {
		v := reflect.ValueOf(e.root)
		if v.Kind() == reflect.Pointer && !v.IsNil() {
			idx.build(v.Elem(), "", "", false, nil)
		}
	}
	return strings.Join(idx.messages(e.problems, "(section)"), "; ")
}

// ValidationError lists every invalid key with its value, sorted.
type ValidationError struct{ Problems []string }

func (e *ValidationError) Error() string {
	return "config: invalid:\n  " + strings.Join(e.Problems, "\n  ")
}

// Validate checks the tree at v (a pointer to a Config or to any section)
// by calling the Validate method of every section in it, and reports every
// problem at once, each naming its key path from v and its value.
func Validate(v any) error { return validateTree(v, false) }

func validateTree(v any, skipRoot bool) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("config: Validate needs a pointer, got %T", v)
	}
	idx := index{}
	var sections []located
	idx.build(rv.Elem(), "", "", false, &sections)
	var msgs []string
	for _, s := range sections {
		if skipRoot && s.path == "" {
			continue
		}
		err := s.v.Validate()
		if err == nil {
			continue
		}
		var fe *FieldErrors
		if errors.As(err, &fe) {
			msgs = append(msgs, idx.messages(fe.problems, s.path)...)
			continue
		}
		at := s.path
		if at == "" {
			at = "(top level)"
		}
		msgs = append(msgs, at+": "+err.Error())
	}
	if len(msgs) == 0 {
		return nil
	}
	slices.Sort(msgs)
	return &ValidationError{Problems: msgs}
}

type located struct {
	path string
	v    Validator
}

// index maps the address of every value in a tree to its key path.
type index map[fieldID]entry

type fieldID struct {
	addr uintptr
	t    reflect.Type
}

type entry struct {
	path   string
	key    string // the YAML key the value sits under (its unit suffix)
	secret bool
	v      reflect.Value
}

// build indexes v (addressable) at path. Map values are not addressable:
// each is copied and the copy indexed under path.key, so a section inside
// a map (a tier's rate limit) validates with its full path.
func (idx index) build(v reflect.Value, path, key string, secret bool, sections *[]located) {
	if v.CanAddr() {
		idx[fieldID{v.UnsafeAddr(), v.Type()}] = entry{path: path, key: key, secret: secret, v: v}
		if sections != nil {
			if val, ok := v.Addr().Interface().(Validator); ok {
				*sections = append(*sections, located{path: path, v: val})
			}
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			idx.build(v.Elem(), path, key, secret, sections)
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			k, ok := yamlKey(f)
			if !ok {
				continue
			}
			idx.build(v.Field(i), keyName(path, k), k, secret || f.Tag.Get("config") == "secret", sections)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			idx.build(v.Index(i), fmt.Sprintf("%s[%d]", path, i), key, secret, sections)
		}
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		for _, k := range keys {
			c := reflect.New(v.Type().Elem()).Elem()
			c.Set(v.MapIndex(k))
			idx.build(c, keyName(path, fmt.Sprint(k)), key, secret, sections)
		}
	}
}

func (idx index) lookup(field any) (entry, bool) {
	p := reflect.ValueOf(field)
	if p.Kind() != reflect.Pointer || p.IsNil() {
		return entry{}, false
	}
	e, ok := idx[fieldID{p.Pointer(), p.Type().Elem()}]
	return e, ok
}

func (idx index) messages(ps []problem, section string) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		e, ok := idx.lookup(p.field)
		path := e.path
		if !ok {
			path = section + ".?" // a field outside the section: a bug in its Validate
		}
		if p.sub != "" {
			path = keyName(path, p.sub)
		}
		var shown string
		switch {
		case e.secret:
			shown = "<redacted>"
		case p.hasValue:
			shown = format(reflect.ValueOf(p.value), e.key)
		case ok:
			shown = format(e.v, e.key)
		}
		if path == "" {
			path = "(top level)"
		}
		out = append(out, fmt.Sprintf("%s: %s (got %q)", path, p.why, shown))
	}
	return out
}

// format shows a value as it is written in YAML: a duration in its key's
// unit (tenant_resolution_ttl_sec: "45", not "45s").
func format(v reflect.Value, key string) string {
	if !v.IsValid() {
		return ""
	}
	if v.Type() == durationType {
		d := time.Duration(v.Int())
		if unit, _ := durationUnit(key); unit != 0 {
			return strconv.FormatFloat(float64(d)/float64(unit), 'f', -1, 64)
		}
		return d.String()
	}
	switch v.Kind() {
	case reflect.Slice:
		if v.Len() == 0 {
			return "[]"
		}
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'f', -1, 64)
	}
	return fmt.Sprint(v.Interface())
}

// sign returns -1, 0 or 1 for a pointer to a number or duration.
func sign(field any) int {
	v := reflect.ValueOf(field).Elem()
	var f float64
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		f = float64(v.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		f = float64(v.Uint())
	case reflect.Float32, reflect.Float64:
		f = v.Float()
	default:
		panic(fmt.Sprintf("config: sign of %s", v.Type()))
	}
	switch {
	case f < 0:
		return -1
	case f > 0:
		return 1
	}
	return 0
}
