// Package layering holds the test of the module's import rules, built from
// `go list -deps -json`:
//
//   - an area (control-plane/..., edge/..., processors/webhooks/...,
//     processors/attribution/..., web/...) imports its own packages,
//     schemas/... and internal/..., never another area;
//   - internal/... never imports an area; only internal/runner, the
//     composition root, does, and only commands (cmd/..., bench) import it;
//   - schemas/... imports nothing else of the module;
//   - no production package imports test support (packages named *test,
//     internal/testenv, internal/benchtest), and the binary links neither
//     test support nor the test-only libraries (net/http/httptest,
//     standard-webhooks, goleak, the collector).
//
// The rules hold for production code. Tests may compose areas (an edge
// integration test runs a real registry): they are not linked into anything.
package layering

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/partners-engine/partners-engine"

// allowed are edges that break a rule and that their owners are removing.
// Each names who removes it; the list must end empty.
var allowed = map[string]string{}

type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Deps       []string
}

func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			return pkgs
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
}

func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

// layer names the layer of a module package.
func layer(p string) string {
	switch {
	case strings.HasPrefix(p, "control-plane/") || p == "control-plane":
		return "control-plane"
	case strings.HasPrefix(p, "edge/") || p == "edge":
		return "edge"
	case p == "processors/webhooks" || strings.HasPrefix(p, "processors/webhooks/"):
		return "processors/webhooks"
	case p == "processors/attribution" || strings.HasPrefix(p, "processors/attribution/"):
		return "processors/attribution"
	case p == "web" || strings.HasPrefix(p, "web/"):
		return "web"
	case p == "schemas" || strings.HasPrefix(p, "schemas/"):
		return "schemas"
	case p == "internal/runner":
		return "root"
	case strings.HasPrefix(p, "internal/"):
		return "internal"
	case strings.HasPrefix(p, "cmd/") || p == "bench":
		return "cmd"
	}
	return "other"
}

func isArea(l string) bool {
	return l == "control-plane" || l == "edge" || l == "processors/webhooks" || l == "processors/attribution" || l == "web"
}

// testSupport reports whether p exists for tests only.
func testSupport(p string) bool {
	last := p[strings.LastIndex(p, "/")+1:]
	return strings.HasSuffix(last, "test") || p == "internal/testenv" || p == "internal/benchtest" || p == "internal/layering"
}

func TestLayers(t *testing.T) {
	var problems []string
	seen := map[string]bool{}
	report := func(edge, why string) {
		seen[edge] = true
		if _, ok := allowed[edge]; !ok {
			problems = append(problems, edge+": "+why)
		}
	}
	for _, p := range list(t, "./...") {
		from, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		lf := layer(from)
		for _, imp := range p.Imports {
			to, ok := rel(imp)
			if !ok {
				continue
			}
			lt := layer(to)
			edge := from + " -> " + to
			switch {
			case isArea(lf) && isArea(lt) && lf != lt:
				report(edge, "an area imports another area (share a contract in schemas or internal instead)")
			case isArea(lf) && lt == "root" || lf == "internal" && lt == "root" || lf == "schemas" && lt == "root":
				report(edge, "only commands import the composition root")
			case lf == "internal" && isArea(lt):
				report(edge, "internal/ imports an area")
			case lf == "schemas" && lt != "schemas":
				report(edge, "schemas imports outside schemas")
			case lt == "cmd" && lf != "cmd":
				report(edge, "a command is imported")
			}
			if testSupport(to) && !testSupport(from) && lf != "cmd" {
				report(edge, "production code imports test support")
			}
		}
	}
	bin := list(t, "-deps", "./cmd/partners")
	for _, p := range bin {
		name := p.ImportPath
		r, inModule := rel(name)
		switch {
		case inModule && testSupport(r):
			report("binary links "+r, "test support in the production binary")
		case name == "net/http/httptest" || strings.HasPrefix(name, "github.com/standard-webhooks/") ||
			strings.HasPrefix(name, "go.uber.org/goleak") || strings.HasPrefix(name, "go.opentelemetry.io/collector/"):
			report("binary links "+name, "a test-only library in the production binary")
		}
	}
	slices.Sort(problems)
	for _, p := range problems {
		t.Error(p)
	}
	for edge, why := range allowed {
		if !seen[edge] {
			t.Errorf("allow-list entry %q (%s) no longer occurs: delete it", edge, why)
		}
	}
}
