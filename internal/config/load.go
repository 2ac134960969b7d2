package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
)

// Load reads path, decodes it over the defaults (placeholders expanded from
// the environment on the parsed values) and validates the result.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, os.LookupEnv)
}

// Parse is Load on bytes with an explicit environment.
func Parse(b []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	sources, err := decodeInto(b, &cfg, lookup)
	if err != nil {
		return nil, err
	}
	cfg.sources = sources
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Validate checks every section and reports all problems at once, each
// naming its key path and value.
func (c *Config) Validate() error { return validateTree(c, true) }

// The development values of the shipped configuration. They are public (in
// this repository), so only `partners dev` accepts them.
const (
	DevAdminToken = "local-dev-admin-token"
	DevPepper     = "local-dev-pepper-not-for-production"
)

// placeholderRe matches values someone was meant to replace.
var placeholderRe = regexp.MustCompile(`(?i)(replace[_-]?me|change[_-]?me|not[_-]for[_-]production)`)

// DevOnly reports the values only `partners dev` may run with: a secret
// that is one of the public development defaults (DevAdminToken,
// DevPepper) and any value that is still a REPLACE_ME / CHANGE_ME-style
// placeholder. Every other process refuses a configuration for which it
// returns an error; each problem names the key and the variable to set.
func (c *Config) DevOnly() error {
	idx := index{}
	idx.build(reflect.ValueOf(c).Elem(), "", "", false, nil)
	var msgs []string
	for _, e := range idx {
		if e.v.Kind() != reflect.String || e.path == "" {
			continue
		}
		v := e.v.String()
		if v == "" {
			continue
		}
		hint := "set a real value"
		if names := c.envNames(e.path); len(names) > 0 {
			hint = "set " + strings.Join(names, " or ")
		}
		switch {
		case e.secret && (v == DevAdminToken || v == DevPepper):
			msgs = append(msgs, fmt.Sprintf("%s: is the public development default, which only `partners dev` accepts (%s)", e.path, hint))
		case placeholderRe.MatchString(v):
			shown := v
			if e.secret {
				shown = "<redacted>"
			}
			msgs = append(msgs, fmt.Sprintf("%s: is a placeholder, not a value (%s) (got %q)", e.path, hint, shown))
		}
	}
	if c.Kafka.TLS.InsecureSkipVerify {
		msgs = append(msgs, "kafka.tls.insecure_skip_verify: accepts any broker certificate, which only `partners dev` allows (set kafka.tls.ca_file)")
	}
	if len(msgs) == 0 {
		return nil
	}
	slices.Sort(msgs)
	return &ValidationError{Problems: msgs}
}

// envNames are the variables the value at path came from.
func (c *Config) envNames(path string) []string {
	src, ok := c.sources[path]
	if !ok {
		// A list item (kafka.brokers[0]) comes from its list's placeholder.
		if i := strings.LastIndex(path, "["); i > 0 {
			src, ok = c.sources[path[:i]]
		}
	}
	if !ok {
		return nil
	}
	var out []string
	for _, m := range placeholder.FindAllStringSubmatch(src, -1) {
		if !strings.HasPrefix(m[0], "$$") {
			out = append(out, m[1])
		}
	}
	return out
}
