package routes

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/partners-engine/partners-engine/schemas"
)

// TestTableMatchesOpenAPI: the route table and the API contract name the
// same operations, methods and paths; no route is served that the spec
// does not describe, and no spec operation is left without a route.
func TestTableMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	var spec struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI, &spec); err != nil {
		t.Fatal(err)
	}
	inSpec := map[string]string{} // "METHOD /path" -> operationId
	for path, ops := range spec.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			var o struct {
				OperationID string `yaml:"operationId"`
			}
			if err := op.Decode(&o); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			inSpec[strings.ToUpper(method)+" "+path] = o.OperationID
		}
	}
	seen := map[string]bool{}
	for _, r := range All {
		if seen[r.Pattern] {
			t.Errorf("%s is in the table twice", r.Pattern)
		}
		seen[r.Pattern] = true
		if r.Pattern == "GET /metrics" || r.Set == UI {
			continue // Prometheus exposition and the HTML UI, outside the JSON API
		}
		op, ok := inSpec[r.Pattern]
		if !ok {
			t.Errorf("%s is served but not in schemas/openapi/openapi.yaml", r.Pattern)
			continue
		}
		if op != "" && op != r.Operation {
			t.Errorf("%s: operation %q in the table, %q in the spec", r.Pattern, r.Operation, op)
		}
	}
	for p := range inSpec {
		if !seen[p] {
			t.Errorf("%s is in the spec but no mode serves it", p)
		}
	}
}

func TestEveryModeHasOps(t *testing.T) {
	t.Parallel()
	for _, m := range Modes {
		if !Serves(m, Ops) {
			t.Errorf("%s does not serve the probes and metrics", m)
		}
	}
	for _, s := range []Set{Tenants, DLQ, WebhookTest, Analytics, UI} {
		n := 0
		for _, m := range Modes {
			if m != Dev && Serves(m, s) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("route set %s is served by %d component modes, want exactly 1", s, n)
		}
	}
}

// markdownTable is the per-mode route table as docs/operators.md shows it.
func markdownTable() string {
	var b strings.Builder
	b.WriteString("| route | set | credential |")
	for _, m := range Modes {
		b.WriteString(" `" + string(m) + "` |")
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(Modes)) + "\n")
	for _, r := range All {
		b.WriteString("| `" + r.Pattern + "` | " + string(r.Set) + " | " + r.Auth.String() + " |")
		for _, m := range Modes {
			if Serves(m, r.Set) {
				b.WriteString(" ✓ |")
			} else {
				b.WriteString(" — |")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestOperatorsDocListsTheRoutes keeps the documented per-mode route table
// equal to the one the processes serve.
func TestOperatorsDocListsTheRoutes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../../docs/operators.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := markdownTable(); !strings.Contains(string(b), want) {
		t.Errorf("docs/operators.md lacks the route table; it must read:\n%s", want)
	}
}
