package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Profile sizes a run: the load, the outages and the time scale of the
// processes under test (profiles/*.yaml).
type Profile struct {
	Name   string   `yaml:"-"`
	Rounds int      `yaml:"rounds"`
	Only   []string `yaml:"scenarios"` // empty: every scenario
	Load   struct {
		EventsPerSec float64       `yaml:"events_per_sec"`
		UsersPerSec  float64       `yaml:"users_per_sec"`
		CostsPerSec  float64       `yaml:"costs_per_sec"`
		ChurnPerSec  float64       `yaml:"churn_per_sec"`
		BeforeFault  time.Duration `yaml:"before_fault"`
		AfterFault   time.Duration `yaml:"after_fault"`
	} `yaml:"load"`
	Outage       time.Duration  `yaml:"outage"`
	ReceiverDown time.Duration  `yaml:"receiver_down"`
	RepeatWindow time.Duration  `yaml:"repeat_window"`
	Settle       time.Duration  `yaml:"settle"`
	Overrides    map[string]any `yaml:"overrides"`
}

// loadProfile reads profiles/<name>.yaml (or a path) strictly.
func loadProfile(name string) (*Profile, error) {
	path := name
	if !strings.ContainsAny(name, "/.") {
		path = filepath.Join("profiles", name+".yaml")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("chaos profile: %w", err)
	}
	var p Profile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("chaos profile %s: %w", path, err)
	}
	p.Name = strings.TrimSuffix(filepath.Base(path), ".yaml")
	switch {
	case p.Rounds < 1:
		return nil, fmt.Errorf("chaos profile %s: rounds must be >= 1 (got %d)", path, p.Rounds)
	case p.Load.EventsPerSec <= 0 || p.Load.UsersPerSec <= 0 || p.Load.CostsPerSec <= 0:
		return nil, fmt.Errorf("chaos profile %s: load rates must be > 0", path)
	case p.Load.BeforeFault <= 0 || p.Load.AfterFault <= 0 || p.Outage <= 0 || p.ReceiverDown <= 0 || p.Settle <= 0 || p.RepeatWindow <= 0:
		return nil, fmt.Errorf("chaos profile %s: before_fault, after_fault, outage, receiver_down, repeat_window and settle must be > 0", path)
	}
	for _, s := range p.Only {
		if findScenario(s) == nil {
			return nil, fmt.Errorf("chaos profile %s: unknown scenario %q (known: %s)", path, s, strings.Join(scenarioNames(), ", "))
		}
	}
	return &p, nil
}

// applyOverrides sets each key path of overrides in the YAML document base
// (the shipped config/partners-engine.yaml) and returns the new document
// and the key paths this version of the file does not have (skipped: the
// suite runs against whatever configuration the tree ships).
func applyOverrides(base []byte, overrides map[string]any) ([]byte, []string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(base, &doc); err != nil {
		return nil, nil, err
	}
	if len(doc.Content) != 1 {
		return nil, nil, fmt.Errorf("config: not one YAML document")
	}
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var skipped []string
	for _, k := range keys {
		n := doc.Content[0]
		for _, part := range strings.Split(k, ".") {
			n = mapValue(n, part)
			if n == nil {
				break
			}
		}
		if n == nil || n.Kind != yaml.ScalarNode {
			skipped = append(skipped, k)
			continue
		}
		n.SetString(fmt.Sprint(overrides[k]))
		n.Tag = "" // let the config decoder read it as the field's type
		n.Style = 0
	}
	out, err := yaml.Marshal(&doc)
	return out, skipped, err
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
