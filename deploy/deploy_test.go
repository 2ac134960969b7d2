package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"go.yaml.in/yaml/v3"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas/chsql"
	"github.com/partners-engine/partners-engine/schemas/chsql/chsqltest"
)

// repoRoot is the repository root as seen from this package's directory.
const repoRoot = ".."

// artefactDirs are the trees whose every YAML and JSON file must parse.
var artefactDirs = []string{"compose", "k8s", "grafana", "envoy"}

// partnersImageRepo identifies the partners-engine image in compose and k8s.
const partnersImageRepo = "partners-engine/partners"

// artefact is one parsed file: its path relative to deploy/ and its
// documents (YAML multi-doc, or the one JSON value).
type artefact struct {
	path string
	raw  []byte
	docs []any
}

var (
	artefactsOnce sync.Once
	artefactsAll  []artefact
	artefactsErrs []error
)

// artefacts parses every .yaml, .yml and .json file under artefactDirs.
func artefacts(t *testing.T) []artefact {
	t.Helper()
	artefactsOnce.Do(func() {
		for _, dir := range artefactDirs {
			err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				ext := filepath.Ext(path)
				if d.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
					return nil
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				a := artefact{path: filepath.ToSlash(path), raw: b}
				if ext == ".json" {
					var v any
					if err := json.Unmarshal(b, &v); err != nil {
						artefactsErrs = append(artefactsErrs, fmt.Errorf("%s: invalid JSON: %w", path, err))
						return nil
					}
					a.docs = []any{v}
				} else {
					// A partners-engine config is plain YAML: its ${env:...}
					// placeholders are expanded on parsed values, never in the text.
					docs, err := yamlDocs(b)
					if err != nil {
						artefactsErrs = append(artefactsErrs, fmt.Errorf("%s: invalid YAML: %w", path, err))
						return nil
					}
					a.docs = docs
				}
				artefactsAll = append(artefactsAll, a)
				return nil
			})
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				artefactsErrs = append(artefactsErrs, err)
			}
		}
	})
	return artefactsAll
}

func TestArtefactsParse(t *testing.T) {
	all := artefacts(t)
	for _, err := range artefactsErrs {
		t.Error(err)
	}
	for _, dir := range []string{"compose/", "k8s/", "grafana/"} {
		if !slices.ContainsFunc(all, func(a artefact) bool { return strings.HasPrefix(a.path, dir) }) {
			t.Errorf("no YAML or JSON file under deploy/%s", dir)
		}
	}
	for _, a := range all {
		if len(a.docs) == 0 {
			t.Errorf("%s: empty", a.path)
		}
	}
}

func yamlDocs(b []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if v != nil {
			docs = append(docs, v)
		}
	}
}

func artefactAt(t *testing.T, path string) artefact {
	t.Helper()
	for _, a := range artefacts(t) {
		if a.path == path {
			return a
		}
	}
	t.Fatalf("%s: missing", path)
	return artefact{}
}

// walk calls fn for every map entry in v, depth first, with the key path.
func walk(v any, path string, fn func(path, key string, val any)) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fn(path, k, x[k])
			walk(x[k], path+"."+k, fn)
		}
	case []any:
		for i, e := range x {
			walk(e, fmt.Sprintf("%s[%d]", path, i), fn)
		}
	}
}

// get follows keys through nested maps; "" when absent.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// defaults is config/partners-engine.yaml with no environment: the ports
// every deployment must agree with. (config.Load is config.Parse of the
// file with os.LookupEnv; an empty environment keeps the test independent
// of the shell it runs in.)
func defaults(t *testing.T) *config.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "config", "partners-engine.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(b, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func noEnv(string) (string, bool) { return "", false }

func hostPort(t *testing.T, what, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %q: %v", what, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s: %q: port: %v", what, addr, err)
	}
	return h, n
}

func port(t *testing.T, what, addr string) int {
	_, p := hostPort(t, what, addr)
	return p
}

// --- images -----------------------------------------------------------------

var (
	exactVersion = regexp.MustCompile(`\d+\.\d+\.\d+`)
	imageDigest  = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
)

// pinned reports why an image reference is not pinned to one build: it
// needs a digest, or a tag naming an exact major.minor.patch version (not
// latest, not a floating major or minor tag such as 4 or v1.34).
func pinned(ref string) error {
	if ref == "" {
		return errors.New("empty image reference")
	}
	if strings.Contains(ref, "$") {
		return errors.New("interpolated image reference: pin it literally")
	}
	if imageDigest.MatchString(ref) {
		return nil
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	i := strings.LastIndex(name, ":")
	if i < 0 {
		return errors.New("no tag (means latest)")
	}
	tag := name[i+1:]
	if tag == "latest" {
		return errors.New("tag latest")
	}
	if !exactVersion.MatchString(tag) {
		return fmt.Errorf("tag %q is not an exact version (want major.minor.patch or a digest)", tag)
	}
	return nil
}

func TestPinnedRule(t *testing.T) {
	for ref, ok := range map[string]bool{
		"envoyproxy/envoy:v1.34.1":                          true,
		"clickhouse/clickhouse-server:24.8.4.13":            true,
		"localhost:5000/partners-engine/partners:0.1.0":     true,
		"golang:1.26.8-bookworm":                            true,
		"grafana/grafana@sha256:" + strings.Repeat("a", 64): true,
		"envoyproxy/envoy":                                  false,
		"envoyproxy/envoy:latest":                           false,
		"apache/kafka:4":                                    false,
		"envoyproxy/envoy:v1.34":                            false,
		"gcr.io/distroless/static-debian12:nonroot":         false,
		"localhost:5000/partners":                           false,
		"partners-engine/partners:${TAG:-0.1.0}":            false,
	} {
		if err := pinned(ref); (err == nil) != ok {
			t.Errorf("pinned(%q) = %v, want ok=%v", ref, err, ok)
		}
	}
}

func TestImagesPinned(t *testing.T) {
	n := 0
	for _, a := range artefacts(t) {
		for _, doc := range a.docs {
			walk(doc, "", func(path, key string, val any) {
				switch {
				case key == "image":
					n++
					if err := pinned(str(val)); err != nil {
						t.Errorf("%s%s.image %q: %v", a.path, path, str(val), err)
					}
				case key == "images" && strings.HasSuffix(a.path, "kustomization.yaml"):
					for _, im := range list(val) {
						ref := str(get(im, "newName"))
						if ref == "" {
							ref = str(get(im, "name"))
						}
						if d := str(get(im, "digest")); d != "" {
							ref += "@" + d
						} else {
							ref += ":" + str(get(im, "newTag"))
						}
						if err := pinned(ref); err != nil {
							t.Errorf("%s%s.images %q: %v", a.path, path, ref, err)
						}
					}
				case key == "GF_INSTALL_PLUGINS":
					for _, p := range strings.Split(str(val), ",") {
						f := strings.Fields(p)
						if len(f) != 2 || !exactVersion.MatchString(f[1]) {
							t.Errorf("%s%s: Grafana plugin %q is not pinned (want \"<id> <x.y.z>\")", a.path, path, p)
						}
					}
				}
			})
		}
	}
	if n < 10 {
		t.Errorf("found only %d image references; the walk is broken", n)
	}
	// Dockerfile base images: pinned, or scratch, or an earlier stage.
	b, err := os.ReadFile("compose/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{"scratch": true}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		ref := f[1]
		if strings.HasPrefix(ref, "--platform") && len(f) > 2 {
			ref = f[2]
		}
		if !stages[ref] {
			if err := pinned(ref); err != nil {
				t.Errorf("compose/Dockerfile: FROM %s: %v", ref, err)
			}
		}
		if len(f) >= 4 && strings.EqualFold(f[len(f)-2], "AS") {
			stages[f[len(f)-1]] = true
		}
	}
}

// --- compose ----------------------------------------------------------------

type composeService struct {
	Image       string         `yaml:"image"`
	Command     []string       `yaml:"command"`
	Environment map[string]any `yaml:"environment"`
	Ports       []string       `yaml:"ports"`
	Expose      []string       `yaml:"expose"`
	Volumes     []string       `yaml:"volumes"`
	NetworkMode string         `yaml:"network_mode"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	if err := yaml.Unmarshal(artefactAt(t, "compose/compose.yaml").raw, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Services) == 0 {
		t.Fatal("compose/compose.yaml: no services")
	}
	return c
}

var (
	composeVar      = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}`)
	composeRequired = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}`)
)

// env is the service's environment as the container sees it, with compose
// ${VAR:-default} interpolation resolved to the defaults and a required
// ${VAR:?message} to a value the operator set in the shell.
func (s composeService) env() map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		v := composeRequired.ReplaceAllString(str(v), "operator-set-$1-0123456789abcdef")
		out[k] = composeVar.ReplaceAllString(v, "$3")
	}
	return out
}

// publishes reports whether the container port is exposed to the other
// services, or published on the host under the same number (the README
// documents the host ports).
func (s composeService) publishes(port int) bool {
	p := strconv.Itoa(port)
	for _, spec := range s.Expose {
		if strings.TrimSuffix(spec, "/tcp") == p {
			return true
		}
	}
	for _, spec := range s.Ports {
		spec = strings.TrimSuffix(spec, "/tcp")
		if spec == p || spec == p+":"+p || strings.HasSuffix(spec, ":"+p+":"+p) {
			return true
		}
	}
	return false
}

// unusedEnv lists the PARTNERS_* variables of env that no ${env:...}
// placeholder of the configuration reads: a typo there silently keeps the
// default.
func unusedEnv(cfgYAML []byte, env map[string]string) []string {
	var out []string
	for k := range env {
		if strings.HasPrefix(k, "PARTNERS_") && !bytes.Contains(cfgYAML, []byte("${env:"+k+":")) && !bytes.Contains(cfgYAML, []byte("${env:"+k+"}")) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// partnersComponents maps the compose service / k8s Deployment names to
// the `partners` subcommand each runs.
var partnersComponents = []string{"control-plane", "edge", "webhooks", "attribution"}

func TestComposeAgreesWithConfig(t *testing.T) {
	def := defaults(t)
	adminPort, xdsPort, authzPort := port(t, "listeners.admin", def.Listeners.Admin), port(t, "listeners.xds", def.Listeners.XDS), port(t, "listeners.ext_authz", def.Listeners.ExtAuthz)
	c := loadCompose(t)
	copyYAML, err := os.ReadFile("compose/partners-engine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	isService := func(what, host string) {
		if _, ok := c.Services[host]; !ok {
			t.Errorf("%s: host %q is not a compose service", what, host)
		}
	}
	for _, name := range append(slices.Clone(partnersComponents), "migrate") {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("compose: service %q missing", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(s.Image, partnersImageRepo) {
				t.Errorf("image %q is not the partners-engine image", s.Image)
			}
			if len(s.Command) == 0 || s.Command[0] != name {
				t.Errorf("command %v: want `partners %s`", s.Command, name)
			}
			if !slices.Contains(s.Volumes, "./partners-engine.yaml:/app/config/partners-engine.yaml:ro") {
				t.Errorf("volumes %v: the compose config copy is not mounted at the default --config path", s.Volumes)
			}
			env := s.env()
			for _, k := range []string{"PARTNERS_KAFKA_BROKERS", "PARTNERS_CLICKHOUSE_ADDR", "PARTNERS_CLICKHOUSE_DB", "PARTNERS_CLICKHOUSE_USER",
				"PARTNERS_CLICKHOUSE_PASSWORD", "PARTNERS_ADMIN_TOKEN", "PARTNERS_KEY_PEPPER", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
				if env[k] == "" {
					t.Errorf("environment: %s unset", k)
				}
			}
			if u := unusedEnv(copyYAML, env); len(u) > 0 {
				t.Errorf("environment: %v are read by no ${env:...} placeholder of the config", u)
			}
			// The configuration this container runs with: the copy, strictly
			// decoded and validated, with the service's environment.
			cfg, err := config.Parse(copyYAML, lookupIn(env))
			if err != nil {
				t.Fatalf("compose/partners-engine.yaml with the %s environment: %v", name, err)
			}
			// The components refuse development secrets; compose has none
			// of its own (the operator sets them in the shell).
			if err := cfg.DevOnly(); err != nil {
				t.Errorf("compose %s would refuse its configuration: %v", name, err)
			}
			for _, l := range []struct {
				key, addr string
				want      int
			}{{"listeners.admin", cfg.Listeners.Admin, adminPort}, {"listeners.xds", cfg.Listeners.XDS, xdsPort}, {"listeners.ext_authz", cfg.Listeners.ExtAuthz, authzPort}} {
				h, p := hostPort(t, l.key, l.addr)
				if p != l.want {
					t.Errorf("%s = %s: port %d, config default is %d", l.key, l.addr, p, l.want)
				}
				if h != "0.0.0.0" && h != "" && h != "::" {
					t.Errorf("%s = %s: a container must listen on all interfaces", l.key, l.addr)
				}
			}
			for _, b := range cfg.Kafka.Brokers {
				h, _ := hostPort(t, "kafka.brokers", b)
				isService("kafka.brokers", h)
			}
			for _, a := range cfg.ClickHouse.Addr {
				h, _ := hostPort(t, "clickhouse.addr", a)
				isService("clickhouse.addr", h)
			}
			if cfg.ClickHouse.AutoStart {
				t.Error("clickhouse.auto_start: the image has no deploy/local scripts")
			}
			h, p := hostPort(t, "xds.ext_authz_address", cfg.XDS.ExtAuthzCluster)
			if p != authzPort {
				t.Errorf("xds.ext_authz_address %s: port %d, the edge listens on %d", cfg.XDS.ExtAuthzCluster, p, authzPort)
			}
			if e, ok := c.Services[h]; !ok || len(e.Command) == 0 || e.Command[0] != "edge" {
				t.Errorf("xds.ext_authz_address %s: %q is not the compose service running `partners edge`", cfg.XDS.ExtAuthzCluster, h)
			}
			for _, r := range cfg.Regions {
				for _, u := range []string{r.ProductionUpstream, r.SandboxUpstream} {
					h, _ := hostPort(t, "regions upstream", u)
					isService("regions["+r.Name+"] upstream", h)
				}
			}
			u := env["OTEL_EXPORTER_OTLP_ENDPOINT"]
			if !strings.HasPrefix(u, "http://otel-collector:4317") {
				t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q: want the collector's OTLP gRPC receiver http://otel-collector:4317", u)
			}
		})
	}
	if cp := c.Services["control-plane"]; !cp.publishes(adminPort) || !cp.publishes(xdsPort) {
		t.Errorf("control-plane ports %v: want the admin API %d and xDS %d", cp.Ports, adminPort, xdsPort)
	}
	if e := c.Services["edge"]; !e.publishes(authzPort) {
		t.Errorf("edge ports %v %v: want ext_authz %d", e.Ports, e.Expose, authzPort)
	}

	// Prometheus scrapes every component on its admin listener.
	prom := artefactAt(t, "compose/prometheus.yml").docs[0]
	var targets []string
	for _, sc := range list(get(prom, "scrape_configs")) {
		for _, st := range list(get(sc, "static_configs")) {
			for _, tg := range list(get(st, "targets")) {
				targets = append(targets, str(tg))
			}
		}
	}
	for _, name := range partnersComponents {
		if want := fmt.Sprintf("%s:%d", name, adminPort); !slices.Contains(targets, want) {
			t.Errorf("compose/prometheus.yml: no scrape target %s (targets %v)", want, targets)
		}
	}
	for _, tg := range targets {
		h, _ := hostPort(t, "prometheus target", tg)
		isService("compose/prometheus.yml target", h)
	}

	// The collector receives OTLP gRPC on the port the services export to,
	// and exports traces to Jaeger.
	otel := artefactAt(t, "compose/otel-collector.yaml").docs[0]
	if ep := str(get(otel, "receivers", "otlp", "protocols", "grpc", "endpoint")); !strings.HasSuffix(ep, ":4317") {
		t.Errorf("compose/otel-collector.yaml: OTLP gRPC receiver at %q, services export to :4317", ep)
	}
	exp := str(get(otel, "exporters", "otlp/jaeger", "endpoint"))
	if h, _ := hostPort(t, "otlp/jaeger endpoint", exp); h != "jaeger" {
		t.Errorf("compose/otel-collector.yaml: otlp/jaeger endpoint %q", exp)
	}
	if tr := list(get(otel, "service", "pipelines", "traces", "exporters")); !slices.Contains(tr, any("otlp/jaeger")) {
		t.Errorf("compose/otel-collector.yaml: traces pipeline exporters %v lack otlp/jaeger", tr)
	}

	// Envoy runs the bootstrap of deploy/envoy.
	env := c.Services["envoy"]
	if !slices.ContainsFunc(env.Volumes, func(v string) bool { return strings.HasPrefix(v, "../envoy/envoy.yaml:") }) {
		t.Errorf("compose envoy volumes %v: deploy/envoy/envoy.yaml is not mounted", env.Volumes)
	}
}

// TestConfigCopiesMatchOriginal keeps deploy/compose/partners-engine.yaml and
// the k8s ConfigMap in step with config/partners-engine.yaml: after undoing
// the documented container-address differences, the decoded configurations
// must be equal.
func TestConfigCopiesMatchOriginal(t *testing.T) {
	orig := defaults(t)
	copies := map[string][]byte{}
	b, err := os.ReadFile("compose/partners-engine.yaml")
	if err != nil {
		t.Fatal(err)
	}
	copies["compose/partners-engine.yaml"] = b
	copies["k8s/config.yaml (partners-config)"] = []byte(k8sConfigYAML(t, k8sObjects(t)))
	for name, b := range copies {
		cfg, err := config.Parse(b, noEnv)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// The shipped manifests let webhooks reach no private address (the
		// local configuration allows the demo's loopback ports).
		if len(cfg.Partner.Webhooks.AllowPrivate) > 0 && slices.ContainsFunc(cfg.Partner.Webhooks.AllowPrivate, func(s string) bool { return strings.TrimSpace(s) != "" }) {
			t.Errorf("%s: partner.webhooks.allow_private_networks = %q, want nothing private allowed", name, cfg.Partner.Webhooks.AllowPrivate)
		}
		cfg.Partner.Webhooks.AllowPrivate = orig.Partner.Webhooks.AllowPrivate
		cfg.ClickHouse.AutoStart = orig.ClickHouse.AutoStart
		cfg.XDS.ExtAuthzCluster = orig.XDS.ExtAuthzCluster
		if len(cfg.Regions) == len(orig.Regions) {
			for i := range cfg.Regions {
				cfg.Regions[i].ProductionUpstream = orig.Regions[i].ProductionUpstream
				cfg.Regions[i].SandboxUpstream = orig.Regions[i].SandboxUpstream
			}
		}
		for _, d := range diff("", reflect.ValueOf(*orig), reflect.ValueOf(*cfg)) {
			t.Errorf("%s differs from config/partners-engine.yaml at %s (update the copy)", name, d)
		}
	}
}

// diff lists the paths where a and b differ.
func diff(path string, a, b reflect.Value) []string {
	switch a.Kind() {
	case reflect.Struct:
		var out []string
		for i := range a.NumField() {
			f := a.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if name == "" {
				name = f.Name
			}
			out = append(out, diff(path+"."+name, a.Field(i), b.Field(i))...)
		}
		return out
	case reflect.Slice:
		if a.Len() != b.Len() {
			return []string{fmt.Sprintf("%s: %v vs %v", path, a.Interface(), b.Interface())}
		}
		var out []string
		for i := range a.Len() {
			out = append(out, diff(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))...)
		}
		return out
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			return []string{fmt.Sprintf("%s: %v vs %v", path, a.Interface(), b.Interface())}
		}
		return nil
	}
}

// --- kubernetes -------------------------------------------------------------

type k8sObject struct {
	file string
	doc  map[string]any
}

func (o k8sObject) kind() string { return str(o.doc["kind"]) }
func (o k8sObject) name() string { return str(get(o.doc, "metadata", "name")) }

func k8sObjects(t *testing.T) []k8sObject {
	t.Helper()
	var out []k8sObject
	for _, a := range artefacts(t) {
		if !strings.HasPrefix(a.path, "k8s/") || strings.HasSuffix(a.path, "kustomization.yaml") {
			continue
		}
		for _, d := range a.docs {
			m, ok := d.(map[string]any)
			if !ok || str(m["kind"]) == "" || str(m["apiVersion"]) == "" {
				t.Errorf("%s: a document without apiVersion/kind", a.path)
				continue
			}
			out = append(out, k8sObject{file: a.path, doc: m})
		}
	}
	return out
}

func k8sFind(objs []k8sObject, kind, name string) (k8sObject, bool) {
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			return o, true
		}
	}
	return k8sObject{}, false
}

func k8sConfigYAML(t *testing.T, objs []k8sObject) string {
	t.Helper()
	cm, ok := k8sFind(objs, "ConfigMap", "partners-config")
	if !ok {
		t.Fatal("k8s: ConfigMap partners-config missing")
	}
	s := str(get(cm.doc, "data", "partners-engine.yaml"))
	if s == "" {
		t.Fatal("k8s: ConfigMap partners-config has no partners-engine.yaml")
	}
	return s
}

// podSpec returns the pod template spec of a Deployment or Job.
func podSpec(o k8sObject) map[string]any {
	m, _ := get(o.doc, "spec", "template", "spec").(map[string]any)
	return m
}

func containers(spec map[string]any) []map[string]any {
	var out []map[string]any
	for _, c := range append(list(spec["initContainers"]), list(spec["containers"])...) {
		if m, ok := c.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func containerPorts(c map[string]any) map[string]int {
	out := map[string]int{}
	for _, p := range list(c["ports"]) {
		n, _ := strconv.Atoi(str(get(p, "containerPort")))
		out[str(get(p, "name"))] = n
	}
	return out
}

func TestK8sAgreesWithConfig(t *testing.T) {
	def := defaults(t)
	adminPort, xdsPort, authzPort := port(t, "listeners.admin", def.Listeners.Admin), port(t, "listeners.xds", def.Listeners.XDS), port(t, "listeners.ext_authz", def.Listeners.ExtAuthz)
	objs := k8sObjects(t)

	// The environment of every partners container: partners-env plus the
	// keys of the secret template.
	env := map[string]string{}
	envCM, ok := k8sFind(objs, "ConfigMap", "partners-env")
	if !ok {
		t.Fatal("k8s: ConfigMap partners-env missing")
	}
	for k, v := range get(envCM.doc, "data").(map[string]any) {
		env[k] = str(v)
	}
	sec, ok := k8sFind(objs, "Secret", "partners-secrets")
	if !ok {
		t.Fatal("k8s: Secret partners-secrets (template) missing")
	}
	for _, k := range []string{"PARTNERS_ADMIN_TOKEN", "PARTNERS_KEY_PEPPER"} {
		if _, ok := get(sec.doc, "stringData").(map[string]any)[k]; !ok {
			t.Errorf("k8s Secret partners-secrets: no %s", k)
		}
	}
	for k, v := range get(sec.doc, "stringData").(map[string]any) {
		env[k] = str(v)
	}
	cfgYAML := []byte(k8sConfigYAML(t, objs))
	if u := unusedEnv(cfgYAML, env); len(u) > 0 {
		t.Errorf("k8s partners-env/partners-secrets: %v are read by no ${env:...} placeholder of the config", u)
	}
	cfg, err := config.Parse(cfgYAML, lookupIn(env))
	if err != nil {
		t.Fatalf("k8s ConfigMap partners-config with the partners-env environment: %v", err)
	}
	// The example Secret's REPLACE_ME values must be refused, naming the keys.
	if err := cfg.DevOnly(); err == nil || !strings.Contains(err.Error(), "admin.token: is a placeholder") || !strings.Contains(err.Error(), "partner.keys.pepper: is a placeholder") {
		t.Errorf("k8s with secret.example.yaml's placeholders: the components must refuse them, got %v", err)
	}
	for _, l := range []struct {
		key, addr string
		want      int
	}{{"listeners.admin", cfg.Listeners.Admin, adminPort}, {"listeners.xds", cfg.Listeners.XDS, xdsPort}, {"listeners.ext_authz", cfg.Listeners.ExtAuthz, authzPort}} {
		h, p := hostPort(t, l.key, l.addr)
		if p != l.want {
			t.Errorf("k8s %s = %s: port %d, config default is %d", l.key, l.addr, p, l.want)
		}
		if h != "0.0.0.0" && h != "" && h != "::" {
			t.Errorf("k8s %s = %s: a pod must listen on all interfaces", l.key, l.addr)
		}
	}
	if cfg.ClickHouse.AutoStart {
		t.Error("k8s clickhouse.auto_start: the image has no deploy/local scripts")
	}

	wantPorts := map[string][]int{
		"control-plane": {adminPort, xdsPort},
		"edge":          {adminPort, authzPort},
		"webhooks":      {adminPort},
		"attribution":   {adminPort},
	}
	for _, name := range partnersComponents {
		d, ok := k8sFind(objs, "Deployment", name)
		if !ok {
			t.Errorf("k8s: Deployment %s missing", name)
			continue
		}
		cs := containers(podSpec(d))
		if len(cs) != 1 {
			t.Errorf("k8s Deployment %s: %d containers, want 1", name, len(cs))
			continue
		}
		c := cs[0]
		if args := list(c["args"]); len(args) == 0 || str(args[0]) != name {
			t.Errorf("k8s Deployment %s: args %v, want `partners %s`", name, args, name)
		}
		ports := containerPorts(c)
		for _, p := range wantPorts[name] {
			if !slices.Contains(slices.Collect(mapValues(ports)), p) {
				t.Errorf("k8s Deployment %s: containerPorts %v lack %d", name, ports, p)
			}
		}
		svc, ok := k8sFind(objs, "Service", name)
		if !ok {
			t.Errorf("k8s: Service %s missing", name)
			continue
		}
		for _, sp := range list(get(svc.doc, "spec", "ports")) {
			tp := str(get(sp, "targetPort"))
			if _, named := ports[tp]; !named && !slices.Contains(slices.Collect(mapValues(ports)), atoi(tp)) {
				t.Errorf("k8s Service %s: targetPort %s is no container port of Deployment %s", name, tp, name)
			}
		}
	}

	// Envoy reaches the edge plugin at xds.ext_authz_address: a Service
	// selecting the edge pods, on the ext_authz port.
	h, p := hostPort(t, "xds.ext_authz_address", cfg.XDS.ExtAuthzCluster)
	if p != authzPort {
		t.Errorf("k8s xds.ext_authz_address %s: port %d, the edge listens on %d", cfg.XDS.ExtAuthzCluster, p, authzPort)
	}
	svcName := strings.Split(h, ".")[0]
	if svc, ok := k8sFind(objs, "Service", svcName); !ok || str(get(svc.doc, "spec", "selector", "app.kubernetes.io/name")) != "edge" {
		t.Errorf("k8s xds.ext_authz_address %s: %q is not a Service selecting the edge pods", cfg.XDS.ExtAuthzCluster, svcName)
	} else if !slices.ContainsFunc(list(get(svc.doc, "spec", "ports")), func(sp any) bool { return atoi(str(get(sp, "port"))) == authzPort }) {
		t.Errorf("k8s Service %s: no port %d", svcName, authzPort)
	}

	// Every manifest is listed in the kustomization, except the secret template.
	kust := artefactAt(t, "k8s/kustomization.yaml").docs[0]
	res := list(get(kust, "resources"))
	files, _ := filepath.Glob("k8s/*.yaml")
	for _, f := range files {
		base := filepath.Base(f)
		listed := slices.Contains(res, any(base))
		switch {
		case base == "kustomization.yaml":
		case base == "secret.example.yaml" && listed:
			t.Errorf("k8s/kustomization.yaml must not apply the secret template")
		case base != "secret.example.yaml" && !listed:
			t.Errorf("k8s/kustomization.yaml: %s is not in resources", base)
		}
	}
}

func mapValues(m map[string]int) func(func(int) bool) {
	return func(yield func(int) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func TestK8sWorkloadsHardened(t *testing.T) {
	def := defaults(t)
	adminPort := port(t, "listeners.admin", def.Listeners.Admin)
	objs := k8sObjects(t)
	n := 0
	for _, o := range objs {
		if o.kind() != "Deployment" && o.kind() != "Job" {
			continue
		}
		n++
		spec := podSpec(o)
		podNonRoot := get(spec, "securityContext", "runAsNonRoot") == true
		for _, c := range containers(spec) {
			what := fmt.Sprintf("%s %s %s/%s", o.file, o.kind(), o.name(), str(c["name"]))
			if !podNonRoot && get(c, "securityContext", "runAsNonRoot") != true {
				t.Errorf("%s: runAsNonRoot is not true", what)
			}
			if get(c, "securityContext", "readOnlyRootFilesystem") != true {
				t.Errorf("%s: readOnlyRootFilesystem is not true", what)
			}
			if get(c, "securityContext", "allowPrivilegeEscalation") != false {
				t.Errorf("%s: allowPrivilegeEscalation is not false", what)
			}
			for _, rk := range []string{"requests", "limits"} {
				for _, r := range []string{"cpu", "memory"} {
					if str(get(c, "resources", rk, r)) == "" {
						t.Errorf("%s: resources.%s.%s unset", what, rk, r)
					}
				}
			}
			if !strings.Contains(str(c["image"]), partnersImageRepo) || o.kind() != "Deployment" {
				continue
			}
			// partners-engine services: probes on the admin listener.
			ports := containerPorts(c)
			for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
				hp := get(c, probe, "httpGet")
				if str(get(hp, "path")) != path {
					t.Errorf("%s: %s path %q, want %s", what, probe, str(get(hp, "path")), path)
				}
				pp := str(get(hp, "port"))
				if n, named := ports[pp]; (named && n != adminPort) || (!named && atoi(pp) != adminPort) {
					t.Errorf("%s: %s port %s is not the admin listener %d", what, probe, pp, adminPort)
				}
			}
		}
	}
	if n < 6 {
		t.Errorf("found %d Deployments/Jobs, want the 4 services, envoy and migrate", n)
	}
	// Secrets in the repository are templates only.
	for _, o := range objs {
		if o.kind() != "Secret" {
			continue
		}
		if _, ok := o.doc["data"]; ok {
			t.Errorf("%s Secret %s: data (base64 values) in the repository; use stringData placeholders", o.file, o.name())
		}
		for k, v := range get(o.doc, "stringData").(map[string]any) {
			if !strings.HasPrefix(str(v), "REPLACE_ME") {
				t.Errorf("%s Secret %s: %s has a value; templates carry REPLACE_ME placeholders only", o.file, o.name(), k)
			}
		}
	}
}

// --- envoy ------------------------------------------------------------------

// bootstraps are deploy/envoy's files and every Envoy bootstrap embedded
// in a k8s ConfigMap.
func bootstraps(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, a := range artefacts(t) {
		if strings.HasPrefix(a.path, "envoy/") {
			for i, d := range a.docs {
				if get(d, "static_resources") != nil || get(d, "dynamic_resources") != nil {
					out[fmt.Sprintf("%s#%d", a.path, i)] = d
				}
			}
		}
	}
	for _, o := range k8sObjects(t) {
		if o.kind() != "ConfigMap" {
			continue
		}
		for k, v := range get(o.doc, "data").(map[string]any) {
			if !strings.HasSuffix(k, ".yaml") || !strings.Contains(str(v), "static_resources") {
				continue
			}
			docs, err := yamlDocs([]byte(str(v)))
			if err != nil || len(docs) != 1 {
				t.Errorf("%s ConfigMap %s %s: %v", o.file, o.name(), k, err)
				continue
			}
			out[fmt.Sprintf("%s ConfigMap %s %s", o.file, o.name(), k)] = docs[0]
		}
	}
	return out
}

func TestEnvoyBootstrapsPointAtXDS(t *testing.T) {
	def := defaults(t)
	xdsPort := port(t, "listeners.xds", def.Listeners.XDS)
	if _, err := os.Stat("envoy/envoy.yaml"); err != nil {
		t.Errorf("deploy/envoy/envoy.yaml (mounted by compose): %v", err)
	}
	bs := bootstraps(t)
	if len(bs) == 0 {
		t.Fatal("no Envoy bootstrap found")
	}
	c := loadCompose(t)
	for name, b := range bs {
		var adsClusters []string
		for _, gs := range list(get(b, "dynamic_resources", "ads_config", "grpc_services")) {
			adsClusters = append(adsClusters, str(get(gs, "envoy_grpc", "cluster_name")))
		}
		if len(adsClusters) == 0 {
			t.Errorf("%s: no dynamic_resources.ads_config grpc_services envoy_grpc cluster", name)
		}
		for _, cn := range adsClusters {
			var cl any
			for _, x := range list(get(b, "static_resources", "clusters")) {
				if str(get(x, "name")) == cn {
					cl = x
				}
			}
			if cl == nil {
				t.Errorf("%s: ADS cluster %q is not a static cluster", name, cn)
				continue
			}
			var eps int
			for _, e := range list(get(cl, "load_assignment", "endpoints")) {
				for _, lb := range list(get(e, "lb_endpoints")) {
					sa := get(lb, "endpoint", "address", "socket_address")
					eps++
					if p := atoi(str(get(sa, "port_value"))); p != xdsPort {
						t.Errorf("%s: xDS cluster %s endpoint port %d, the control plane serves xDS on %d", name, cn, p, xdsPort)
					}
					host := str(get(sa, "address"))
					switch {
					case strings.HasPrefix(name, "envoy/"):
						// Compose mounts this file: its xDS host must resolve there.
						if _, ok := c.Services[host]; !ok && c.Services["envoy"].NetworkMode != "service:control-plane" {
							t.Errorf("%s: xDS host %q is neither a compose service nor reachable through network_mode service:control-plane", name, host)
						}
					case strings.HasPrefix(name, "k8s/"):
						if strings.Split(host, ".")[0] != "control-plane" {
							t.Errorf("%s: xDS host %q is not the control-plane Service", name, host)
						}
					}
				}
			}
			if eps == 0 {
				t.Errorf("%s: xDS cluster %s has no endpoints", name, cn)
			}
		}
	}
	// The control plane tells Envoy to reach ext_authz at the edge's port.
	if p := port(t, "xds.ext_authz_address", def.XDS.ExtAuthzCluster); p != port(t, "listeners.ext_authz", def.Listeners.ExtAuthz) {
		t.Errorf("config: xds.ext_authz_address %s does not point at listeners.ext_authz %s", def.XDS.ExtAuthzCluster, def.Listeners.ExtAuthz)
	}
}

// TestK8sEnvoyBootstrapMirrorsDeployEnvoy: the cluster's bootstrap is
// deploy/envoy/envoy.yaml except for the xDS host, the node id and the
// mutual TLS of the xDS connection (which the cluster bootstrap must have).
func TestK8sEnvoyBootstrapMirrorsDeployEnvoy(t *testing.T) {
	want := artefactAt(t, "envoy/envoy.yaml").docs[0]
	n := 0
	for name, b := range bootstraps(t) {
		if !strings.HasPrefix(name, "k8s/") {
			continue
		}
		n++
		norm := func(v any) any {
			var c any
			raw, _ := json.Marshal(v)
			_ = json.Unmarshal(raw, &c)
			if node, ok := get(c, "node").(map[string]any); ok {
				delete(node, "id")
			}
			for _, cl := range list(get(c, "static_resources", "clusters")) {
				if m, ok := cl.(map[string]any); ok && str(m["name"]) == "xds" {
					delete(m, "transport_socket")
				}
				for _, e := range list(get(cl, "load_assignment", "endpoints")) {
					for _, lb := range list(get(e, "lb_endpoints")) {
						if sa, ok := get(lb, "endpoint", "address", "socket_address").(map[string]any); ok {
							delete(sa, "address")
						}
					}
				}
			}
			return c
		}
		for _, cl := range list(get(b, "static_resources", "clusters")) {
			if str(get(cl, "name")) == "xds" && str(get(cl, "transport_socket", "typed_config", "@type")) != "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" {
				t.Errorf("%s: the xDS cluster has no mutual TLS (UpstreamTlsContext)", name)
			}
		}
		if w, g := norm(want), norm(b); !reflect.DeepEqual(w, g) {
			wj, _ := json.MarshalIndent(w, "", " ")
			gj, _ := json.MarshalIndent(g, "", " ")
			t.Errorf("%s differs from deploy/envoy/envoy.yaml beyond the xDS host and node id:\n%s\nvs\n%s", name, gj, wj)
		}
	}
	if n == 0 {
		t.Error("k8s: no Envoy bootstrap ConfigMap")
	}
}

// TestEnvoyDeploymentsMatchXDSConfig checks what the control plane tells
// Envoy against where Envoy runs: the region it asks for is configured, the
// listener ports the snapshots open are published, and the TLS files the SDS
// secrets name are mounted.
func TestEnvoyDeploymentsMatchXDSConfig(t *testing.T) {
	def := defaults(t)
	regions := def.RegionNames()
	tlsPaths := []string{def.XDS.TLS.ServerCertPath, def.XDS.TLS.ServerKeyPath, def.XDS.TLS.ClientCAPath}
	mounted := func(what string, mounts []string) {
		for _, p := range tlsPaths {
			if !slices.ContainsFunc(mounts, func(m string) bool { return strings.HasPrefix(p, strings.TrimSuffix(m, "/")+"/") }) {
				t.Errorf("%s: xds.tls file %s is under none of the mounts %v", what, p, mounts)
			}
		}
	}
	flag := func(args []string, name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}

	// compose
	c := loadCompose(t)
	e, ok := c.Services["envoy"]
	if !ok {
		t.Fatal("compose: no envoy service")
	}
	region := flag(e.Command, "--service-cluster")
	if region == "" {
		for _, b := range bootstraps(t) {
			region = str(get(b, "node", "cluster"))
		}
	}
	if !slices.Contains(regions, region) {
		t.Errorf("compose envoy: region (node.cluster / --service-cluster) %q is not in regions %v", region, regions)
	}
	for _, p := range []int{def.XDS.ListenerPort, def.XDS.EnterpriseListenerPort} {
		if !e.publishes(p) {
			t.Errorf("compose envoy: ports %v lack the xDS listener port %d", e.Ports, p)
		}
	}
	var mounts []string
	for _, v := range e.Volumes {
		if parts := strings.Split(v, ":"); len(parts) >= 2 {
			mounts = append(mounts, parts[1])
		}
	}
	mounted("compose envoy", mounts)

	// kubernetes
	objs := k8sObjects(t)
	n := 0
	for _, o := range objs {
		if o.kind() != "Deployment" {
			continue
		}
		for _, ct := range containers(podSpec(o)) {
			if !strings.HasPrefix(str(ct["image"]), "envoyproxy/envoy") {
				continue
			}
			n++
			what := fmt.Sprintf("%s Deployment %s", o.file, o.name())
			ports := slices.Collect(mapValues(containerPorts(ct)))
			for _, p := range []int{def.XDS.ListenerPort, def.XDS.EnterpriseListenerPort} {
				if !slices.Contains(ports, p) {
					t.Errorf("%s: containerPorts %v lack the xDS listener port %d", what, ports, p)
				}
			}
			var mounts []string
			for _, m := range list(ct["volumeMounts"]) {
				mounts = append(mounts, str(get(m, "mountPath")))
			}
			mounted(what, mounts)
			var args []string
			for _, a := range list(ct["args"]) {
				args = append(args, str(a))
			}
			region := flag(args, "--service-cluster")
			if region == "" {
				// node.cluster of the bootstrap ConfigMap mounted by the pod.
				for _, v := range list(get(podSpec(o), "volumes")) {
					cmName := str(get(v, "configMap", "name"))
					if cm, ok := k8sFind(objs, "ConfigMap", cmName); ok {
						for _, data := range get(cm.doc, "data").(map[string]any) {
							if docs, err := yamlDocs([]byte(str(data))); err == nil && len(docs) == 1 {
								if r := str(get(docs[0], "node", "cluster")); r != "" {
									region = r
								}
							}
						}
					}
				}
			}
			if !slices.Contains(regions, region) {
				t.Errorf("%s: region (node.cluster / --service-cluster) %q is not in regions %v", what, region, regions)
			}
		}
	}
	if n == 0 {
		t.Error("k8s: no Envoy Deployment")
	}
}

// --- grafana ----------------------------------------------------------------

type dashboardRef struct {
	file, panel string
	dsUID       string
	sql, promQL string
}

func grafanaDatasources(t *testing.T) map[string]string {
	t.Helper()
	uids := map[string]string{}
	for _, a := range artefacts(t) {
		if !strings.HasPrefix(a.path, "grafana/provisioning/datasources/") {
			continue
		}
		for _, d := range a.docs {
			for _, ds := range list(get(d, "datasources")) {
				uid, typ := str(get(ds, "uid")), str(get(ds, "type"))
				if uid == "" || typ == "" {
					t.Errorf("%s: datasource %q without uid or type", a.path, str(get(ds, "name")))
				}
				uids[uid] = typ
			}
		}
	}
	if len(uids) == 0 {
		t.Fatal("grafana: no provisioned datasources")
	}
	return uids
}

const (
	clickhouseType = "grafana-clickhouse-datasource"
	prometheusType = "prometheus"
)

// dashboardQueries checks every panel's datasource and returns the queries.
func dashboardQueries(t *testing.T) []dashboardRef {
	t.Helper()
	uids := grafanaDatasources(t)
	var refs []dashboardRef
	seenUID := map[string]string{}
	n := 0
	for _, a := range artefacts(t) {
		if !strings.HasPrefix(a.path, "grafana/dashboards/") {
			continue
		}
		n++
		if !strings.HasSuffix(a.path, ".json") {
			t.Errorf("%s: dashboards are JSON", a.path)
			continue
		}
		d := a.docs[0]
		uid, title := str(get(d, "uid")), str(get(d, "title"))
		if uid == "" || title == "" {
			t.Errorf("%s: dashboard without uid or title", a.path)
		}
		if other, dup := seenUID[uid]; dup {
			t.Errorf("%s: dashboard uid %q already used by %s", a.path, uid, other)
		}
		seenUID[uid] = a.path
		checkDS := func(where string, ds any) string {
			u := str(get(ds, "uid"))
			typ, ok := uids[u]
			if !ok {
				t.Errorf("%s %s: datasource uid %q is not provisioned (have %v)", a.path, where, u, uids)
			} else if dt := str(get(ds, "type")); dt != "" && dt != typ {
				t.Errorf("%s %s: datasource %q has type %q, provisioned as %q", a.path, where, u, dt, typ)
			}
			return u
		}
		add := func(where, u string, q any) {
			r := dashboardRef{file: a.path, panel: where, dsUID: u}
			switch uids[u] {
			case clickhouseType:
				r.sql = str(get(q, "rawSql"))
				if r.sql == "" {
					r.sql = str(get(q, "query"))
				}
			case prometheusType:
				r.promQL = str(get(q, "expr"))
				if r.promQL == "" {
					r.promQL = str(get(q, "query"))
				}
			}
			if r.sql == "" && r.promQL == "" {
				t.Errorf("%s %s: empty query", a.path, where)
			}
			refs = append(refs, r)
		}
		var panels func(ps []any)
		count := 0
		panels = func(ps []any) {
			for _, p := range ps {
				count++
				where := fmt.Sprintf("panel %q", str(get(p, "title")))
				if str(get(p, "type")) == "row" {
					panels(list(get(p, "panels")))
					continue
				}
				pu := checkDS(where, get(p, "datasource"))
				ts := list(get(p, "targets"))
				if len(ts) == 0 {
					t.Errorf("%s %s: no targets", a.path, where)
				}
				for _, tg := range ts {
					u := pu
					if ds := get(tg, "datasource"); ds != nil {
						u = checkDS(where+" target", ds)
					}
					add(where, u, tg)
				}
			}
		}
		panels(list(get(d, "panels")))
		if count == 0 {
			t.Errorf("%s: no panels", a.path)
		}
		for _, v := range list(get(d, "templating", "list")) {
			if str(get(v, "type")) != "query" {
				continue
			}
			where := fmt.Sprintf("variable %q", str(get(v, "name")))
			u := checkDS(where, get(v, "datasource"))
			q := get(v, "query")
			if s, ok := q.(string); ok {
				q = map[string]any{"rawSql": s, "expr": s}
			}
			add(where, u, q)
		}
	}
	if n < 4 {
		t.Errorf("grafana: %d dashboards, want partner ROI, delivery health, edge auth and xDS", n)
	}
	return refs
}

var (
	createStmt = regexp.MustCompile(`(?is)\bCREATE\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?` + "`?" + `([A-Za-z_][A-Za-z0-9_.]*)`)
	fromTable  = regexp.MustCompile(`(?i)\b(?:FROM|JOIN)\s+` + "`?" + `([A-Za-z_][A-Za-z0-9_.]*)`)
	promName   = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// clickhouseObjects are the tables and views the migrations create.
func clickhouseObjects(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "schemas", "clickhouse", "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations: %v", err)
	}
	out := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range createStmt.FindAllStringSubmatch(stripSQLComments(string(b)), -1) {
			out[unqualified(m[1])] = true
		}
	}
	return out
}

func stripSQLComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "--"); i >= 0 {
			l = l[:i]
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

func unqualified(name string) string { return name[strings.LastIndex(name, ".")+1:] }

// sqlTables are the tables a query reads (FROM/JOIN followed by a name;
// subqueries start with a parenthesis and are skipped).
func sqlTables(sql string) []string {
	var out []string
	for _, m := range fromTable.FindAllStringSubmatch(stripSQLComments(sql), -1) {
		out = append(out, unqualified(m[1]))
	}
	return out
}

func TestGrafanaDashboardsUseProvisionedDatasources(t *testing.T) {
	refs := dashboardQueries(t)
	var ch, prom int
	for _, r := range refs {
		if r.sql != "" {
			ch++
		}
		if r.promQL != "" {
			prom++
		}
	}
	if ch == 0 || prom == 0 {
		t.Errorf("dashboards have %d ClickHouse and %d Prometheus queries; want both", ch, prom)
	}
	// The dashboards provider reads the directory compose mounts them at.
	found := false
	for _, a := range artefacts(t) {
		if !strings.HasPrefix(a.path, "grafana/provisioning/dashboards/") {
			continue
		}
		for _, d := range a.docs {
			for _, p := range list(get(d, "providers")) {
				found = true
				if path := str(get(p, "options", "path")); path != "/var/lib/grafana/dashboards" {
					t.Errorf("%s: provider path %q; compose mounts deploy/grafana/dashboards at /var/lib/grafana/dashboards", a.path, path)
				}
			}
		}
	}
	if !found {
		t.Error("grafana: no dashboards provider provisioned")
	}
}

func TestGrafanaClickHouseTablesExist(t *testing.T) {
	objects := clickhouseObjects(t)
	n := 0
	for _, r := range dashboardQueries(t) {
		if r.sql == "" {
			continue
		}
		tables := sqlTables(r.sql)
		if len(tables) == 0 {
			t.Errorf("%s %s: no table found in %q", r.file, r.panel, r.sql)
		}
		for _, tb := range tables {
			n++
			if !objects[tb] {
				t.Errorf("%s %s: ClickHouse table or view %q is not created by schemas/clickhouse/migrations", r.file, r.panel, tb)
			}
		}
	}
	if n == 0 {
		t.Error("no ClickHouse tables referenced by the dashboards")
	}
}

// goSources is the text of every non-test .go file of the repository
// outside deploy/.
func goSources(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			base := d.Name()
			if path != repoRoot && (strings.HasPrefix(base, ".") || base == "deploy" || base == "vendor" || base == "testdata" || base == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		b.Write(src)
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// metricDeclared reports whether the Go code declares the metric name m as
// a string literal: the Prometheus name itself, without the histogram
// series suffix, or the OpenTelemetry instrument name the Prometheus
// exporter translates to it (dots for underscores, without _total or the
// unit suffix).
func metricDeclared(src, m string) bool {
	cands := []string{m}
	for _, suf := range []string{"_bucket", "_count", "_sum"} {
		if s, ok := strings.CutSuffix(m, suf); ok {
			cands = append(cands, s)
		}
	}
	for _, c := range slices.Clone(cands) {
		c = strings.TrimSuffix(c, "_total")
		for _, unit := range []string{"", "_seconds", "_milliseconds", "_bytes", "_ratio"} {
			if s, ok := strings.CutSuffix(c, unit); ok {
				cands = append(cands, s, strings.ReplaceAll(s, "_", "."))
			}
		}
	}
	for _, c := range cands {
		if strings.Contains(src, `"`+c+`"`) {
			return true
		}
	}
	return false
}

// promMetrics are the partners_* metric names a PromQL expression uses.
func promMetrics(expr string) []string {
	var out []string
	for _, tok := range promName.FindAllString(expr, -1) {
		if strings.HasPrefix(tok, "partners_") {
			out = append(out, tok)
		}
	}
	return out
}

func TestGrafanaPrometheusMetricsDeclared(t *testing.T) {
	src := goSources(t)
	n := 0
	for _, r := range dashboardQueries(t) {
		for _, m := range promMetrics(r.promQL) {
			n++
			if !metricDeclared(src, m) {
				t.Errorf("%s %s: metric %s is declared nowhere in the Go code", r.file, r.panel, m)
			}
		}
	}
	if n == 0 {
		t.Error("no partners_* metrics referenced by the dashboards")
	}
	if metricDeclared(src, "partners_no_such_metric_total") {
		t.Error("metricDeclared matched a metric nobody declares")
	}
}

// --- dashboards against the real ClickHouse ----------------------------------

// expandGrafana expands a dashboard query as Grafana and the ClickHouse
// plugin would, with the variables set to this test's rows.
func expandGrafana(sql string, from, to time.Time) (string, error) {
	return chsqltest.ExpandGrafana(sql, from, to, map[string]string{
		"${model}":               "last_touch",
		"${partner:singlequote}": "'p-1'",
		"${tenant:singlequote}":  "'t-1'",
	})
}

// TestDashboardQueriesRunOnClickHouse runs every ClickHouse query of the
// dashboards on a migrated database with a little data, and checks the ROI
// and delivery figures the panels show.
func TestDashboardQueriesRunOnClickHouse(t *testing.T) {
	cfg := testenv.Config(t)
	conn := testenv.ClickHouse(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	now := time.Now().UTC().Truncate(time.Second)
	at := now.Add(-time.Hour)
	insert := func(stmt string, rows ...[]any) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, stmt)
		if err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
		for _, r := range rows {
			if err := b.Append(r...); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	dec := decimal.RequireFromString
	// One conversion worth 100 credited fully to p-1 under every model, and
	// inserted twice (at-least-once): the ROI must not double.
	var attrs [][]any
	for _, model := range []string{"first_touch", "last_touch", "linear", "time_decay", "position_based"} {
		row := []any{"a-" + model, "c-1", "u-1", "p-1", model, "purchase", uint64(1), dec("1"), dec("100"), dec("1"), at}
		attrs = append(attrs, row, row)
	}
	insert("INSERT INTO attributions (id, conversion_id, user_id, partner_id, model, kind, version, credit, revenue, new_customer, converted_at)", attrs...)
	insert("INSERT INTO costs (id, partner_id, amount, currency, amount_base, category, occurred_at)",
		[]any{"cost-1", "p-1", dec("40"), "USD", dec("40"), "cpc", at},
		[]any{"cost-1", "p-1", dec("40"), "USD", dec("40"), "cpc", at})
	insert("INSERT INTO touchpoints (id, user_id, partner_id, source, utm_source, utm_medium, utm_campaign, referrer, region, trace_id, occurred_at)",
		[]any{"tp-1", "u-1", "p-1", "utm", "", "", "", "", "us-east", "", at},
		[]any{"tp-2", "u-2", "p-1", "api_key", "", "", "", "", "us-east", "", at})
	// One delivery: a retry then a success, the success row duplicated.
	ok := []any{"d-1/2", "d-1", "t-1", "e-1", "ev-1", "order.created", uint16(2), uint16(200), "delivered", 12.5, "", "trace-2", at}
	insert("INSERT INTO webhook_deliveries (id, delivery_id, tenant_id, endpoint_id, event_id, event_type, attempt, status_code, outcome, latency_ms, error, trace_id, attempted_at)",
		[]any{"d-1/1", "d-1", "t-1", "e-1", "ev-1", "order.created", uint16(1), uint16(503), "retry", 30.0, "503", "trace-1", at}, ok, ok)
	// The attribution processor writes roi_daily itself; from rows written
	// straight into the raw tables it is rebuilt as migration 0204 does.
	for _, st := range []chsql.Statement{chsql.TruncateRollup, chsql.RebuildRollup} {
		if err := conn.Exec(ctx, st.SQL); err != nil {
			t.Fatalf("%s: %v", st.Name, err)
		}
	}

	results := map[string][]map[string]any{}
	n := 0
	for _, r := range dashboardQueries(t) {
		if r.sql == "" {
			continue
		}
		n++
		sql, err := expandGrafana(r.sql, now.Add(-48*time.Hour), now.Add(time.Hour))
		if err != nil {
			t.Errorf("%s %s: %v (teach chsqltest.ExpandGrafana)", r.file, r.panel, err)
			continue
		}
		rows, err := queryMaps(ctx, conn, sql)
		if err != nil {
			t.Errorf("%s %s: %v\n%s", r.file, r.panel, err, sql)
			continue
		}
		results[r.file+" "+r.panel] = rows
	}
	if n == 0 {
		t.Fatal("no ClickHouse queries in the dashboards")
	}

	roi := results[`grafana/dashboards/partner-roi.json panel "ROI per partner"`]
	if len(roi) != 1 {
		t.Fatalf("ROI per partner: %v, want one row for p-1", roi)
	}
	for col, want := range map[string]float64{"revenue": 100, "cost": 40, "profit": 60, "roi": 1.5, "conversions": 1, "new_customers": 1, "cac": 40, "leads": 2, "cpl": 20} {
		if got := toFloat(roi[0][col]); got != want {
			t.Errorf("ROI per partner: %s = %v, want %v", col, roi[0][col], want)
		}
	}
	stats := map[string]float64{"Attributed revenue": 100, "Cost": 40, "ROI": 1.5, "Conversions (credit)": 1, "New customers (credit)": 1, "CAC": 40}
	for title, want := range stats {
		got := results[fmt.Sprintf("grafana/dashboards/partner-roi.json panel %q", title)]
		if len(got) != 1 || toFloat(got[0]["value"]) != want {
			t.Errorf("partner ROI stat %q: %v, want value %v", title, got, want)
		}
	}
	del := results[`grafana/dashboards/delivery-health.json panel "Delivery summary per partner"`]
	if len(del) != 1 {
		t.Fatalf("Delivery summary per partner: %v, want one row for t-1", del)
	}
	for col, want := range map[string]float64{"deliveries": 1, "delivered": 1, "success_ratio": 1, "attempts": 2, "dead_lettered": 0} {
		if got := toFloat(del[0][col]); got != want {
			t.Errorf("Delivery summary per partner: %s = %v, want %v", col, del[0][col], want)
		}
	}
}

func queryMaps(ctx context.Context, conn driver.Conn, sql string) ([]map[string]any, error) {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := rows.ColumnTypes()
	var out []map[string]any
	for rows.Next() {
		dest := make([]any, len(cols))
		for i, c := range cols {
			dest[i] = reflect.New(c.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		m := map[string]any{}
		for i, c := range cols {
			m[c.Name()] = reflect.ValueOf(dest[i]).Elem().Interface()
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case decimal.Decimal:
		f, _ := x.Float64()
		return f
	case *float64:
		if x == nil {
			return 0
		}
		return *x
	}
	f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil {
		return -1
	}
	return f
}

// TestClickHouseImageCoveredByConformance: the ClickHouse image compose
// pins is a version line the SQL conformance suite runs (schemas/chsql,
// engines in deploy/local/chdb/requirements-<major.minor>.txt).
func TestClickHouseImageCoveredByConformance(t *testing.T) {
	c := loadCompose(t)
	s, ok := c.Services["clickhouse"]
	if !ok {
		t.Fatal("compose: no clickhouse service")
	}
	ref := s.Image
	const repo = "clickhouse/clickhouse-server:"
	if !strings.HasPrefix(ref, repo) {
		t.Fatalf("clickhouse image %q: want %s<version>", ref, repo)
	}
	parts := strings.Split(strings.TrimPrefix(ref, repo), ".")
	if len(parts) < 2 {
		t.Fatalf("clickhouse image %q: no major.minor", ref)
	}
	line := parts[0] + "." + parts[1]
	if _, err := os.Stat("local/chdb/requirements-" + line + ".txt"); err != nil {
		engines, _ := filepath.Glob("local/chdb/requirements-*.txt")
		t.Errorf("compose pins ClickHouse %s, a version the conformance suite does not run (engines: %v)", line, engines)
	}
	k8s := artefactAt(t, "k8s/clickhouse/clickhouse.yaml")
	var k8sImages []string
	for _, d := range k8s.docs {
		if m, ok := d.(map[string]any); ok && str(m["kind"]) == "StatefulSet" {
			for _, c := range containers(podSpec(k8sObject{doc: m})) {
				k8sImages = append(k8sImages, str(c["image"]))
			}
		}
	}
	if !slices.Equal(k8sImages, []string{ref}) {
		t.Errorf("deploy/k8s/clickhouse pins %v, compose pins %s: keep them equal", k8sImages, ref)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), ref) {
		t.Errorf("deploy/README.md does not name the pinned ClickHouse image %s", ref)
	}
}

// --- the edge's global rate limits and gRPC hardening ------------------------

// TestEnvoyAdminOnLoopback: every shipped Envoy bootstrap keeps the admin
// interface on loopback, nothing publishes it, and what Prometheus and the
// probes need of it comes through the read-only stats listener.
func TestEnvoyAdminOnLoopback(t *testing.T) {
	for name, b := range bootstraps(t) {
		a := str(get(b, "admin", "address", "socket_address", "address"))
		if a != "127.0.0.1" && a != "::1" {
			t.Errorf("%s: admin interface on %q, want loopback only", name, a)
		}
		adminPort := atoi(str(get(b, "admin", "address", "socket_address", "port_value")))
		for _, l := range list(get(b, "static_resources", "listeners")) {
			if atoi(str(get(l, "address", "socket_address", "port_value"))) == adminPort {
				t.Errorf("%s: a static listener serves the admin port %d", name, adminPort)
			}
		}
	}
	c := loadCompose(t)
	if c.Services["envoy"].publishes(9901) {
		t.Error("compose: envoy publishes the admin port 9901")
	}
	prom := artefactAt(t, "compose/prometheus.yml")
	if !bytes.Contains(prom.raw, []byte(`"envoy:9902"`)) || bytes.Contains(prom.raw, []byte("envoy:9901")) {
		t.Error("compose/prometheus.yml: Envoy must be scraped on the stats listener envoy:9902, not the admin port")
	}
	for _, o := range k8sObjects(t) {
		if o.kind() != "Deployment" || !strings.HasPrefix(o.name(), "envoy") {
			continue
		}
		for _, c := range containers(podSpec(o)) {
			if _, ok := containerPorts(c)["admin"]; ok || slices.Contains(mapValuesList(containerPorts(c)), 9901) {
				t.Errorf("%s %s: the admin port is a container port", o.file, o.name())
			}
		}
	}
}

func mapValuesList(m map[string]int) []int {
	out := make([]int, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestRateLimitServiceDeployed: compose and k8s run Redis and the
// rate-limit service (pinned images), the service counts in that Redis,
// takes its configuration from the control plane's xDS port as a node of a
// configured region, refuses nothing twice (STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT),
// and partner.rate_limit.service.address names it on its gRPC port.
func TestRateLimitServiceDeployed(t *testing.T) {
	def := defaults(t)
	xdsPort := port(t, "listeners.xds", def.Listeners.XDS)
	check := func(where string, env map[string]string, rlsHost, redisHost string, effective *config.Config) {
		t.Helper()
		if env["BACKEND_TYPE"] != "redis" || env["REDIS_SOCKET_TYPE"] != "tcp" {
			t.Errorf("%s: ratelimit backend %q over %q, want redis over tcp", where, env["BACKEND_TYPE"], env["REDIS_SOCKET_TYPE"])
		}
		if h, _, err := net.SplitHostPort(env["REDIS_URL"]); err != nil || h != redisHost {
			t.Errorf("%s: REDIS_URL %q does not name the redis service %s", where, env["REDIS_URL"], redisHost)
		}
		if env["STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT"] != "true" {
			t.Errorf("%s: STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT must be true (a request refused by burst_size must not use up requests_per_minute)", where)
		}
		if env["CONFIG_TYPE"] != "GRPC_XDS_SOTW" {
			t.Errorf("%s: CONFIG_TYPE %q, want GRPC_XDS_SOTW (configuration from the control plane)", where, env["CONFIG_TYPE"])
		}
		if _, p, _ := net.SplitHostPort(env["CONFIG_GRPC_XDS_SERVER_URL"]); atoi(p) != xdsPort {
			t.Errorf("%s: CONFIG_GRPC_XDS_SERVER_URL %q is not the control plane's xDS port %d", where, env["CONFIG_GRPC_XDS_SERVER_URL"], xdsPort)
		}
		region, _ := strings.CutPrefix(env["CONFIG_GRPC_XDS_NODE_METADATA"], "region=")
		if _, ok := def.Regions.Get(region); !ok {
			t.Errorf("%s: the rate-limit service names region %q (node metadata), not a configured one", where, region)
		}
		h, p := hostPort(t, "partner.rate_limit.service.address", effective.Partner.RateLimit.Service.Address)
		if h != rlsHost || p != atoi(env["GRPC_PORT"]) {
			t.Errorf("%s: partner.rate_limit.service.address %s is not the ratelimit service's gRPC port %s:%s", where, effective.Partner.RateLimit.Service.Address, rlsHost, env["GRPC_PORT"])
		}
	}

	c := loadCompose(t)
	rls, ok := c.Services["ratelimit"]
	if !ok || c.Services["redis"].Image == "" {
		t.Fatal("compose: no ratelimit or redis service")
	}
	ccfg, err := config.Parse(artefactAt(t, "compose/partners-engine.yaml").raw, lookupIn(c.Services["control-plane"].env()))
	if err != nil {
		t.Fatal(err)
	}
	check("compose", rls.env(), "ratelimit", "redis", ccfg)
	if !rls.publishes(atoi(rls.env()["GRPC_PORT"])) {
		t.Errorf("compose ratelimit does not expose its gRPC port %s", rls.env()["GRPC_PORT"])
	}

	objs := k8sObjects(t)
	d, ok := k8sFind(objs, "Deployment", "ratelimit")
	if _, okRedis := k8sFind(objs, "Deployment", "redis"); !ok || !okRedis {
		t.Fatal("k8s: no ratelimit or redis Deployment")
	}
	env := map[string]string{}
	for _, e := range list(containers(podSpec(d))[0]["env"]) {
		env[str(get(e, "name"))] = str(get(e, "value"))
	}
	kcfg, err := config.Parse([]byte(k8sConfigYAML(t, objs)), lookupIn(k8sEnv(t, objs, "control-plane")))
	if err != nil {
		t.Fatal(err)
	}
	check("k8s", env, "ratelimit.partners-engine.svc.cluster.local", "redis.partners-engine.svc.cluster.local", kcfg)
	for _, k := range []string{"GRPC_SERVER_USE_TLS", "CONFIG_GRPC_XDS_SERVER_USE_TLS"} {
		if env[k] != "true" {
			t.Errorf("k8s ratelimit: %s is not true", k)
		}
	}
	for _, k := range []string{"GRPC_SERVER_TLS_CERT", "GRPC_SERVER_TLS_KEY", "GRPC_CLIENT_TLS_CACERT", "CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "CONFIG_GRPC_XDS_SERVER_TLS_CACERT"} {
		if !mountedIn(podSpec(d), env[k]) {
			t.Errorf("k8s ratelimit: %s=%q is under no volume mount", k, env[k])
		}
	}
}

// k8sEnv is a partners Deployment's environment: partners-env, the secret
// template's keys and the container's own env values.
func k8sEnv(t *testing.T, objs []k8sObject, deployment string) map[string]string {
	t.Helper()
	env := map[string]string{}
	if cm, ok := k8sFind(objs, "ConfigMap", "partners-env"); ok {
		for k, v := range get(cm.doc, "data").(map[string]any) {
			env[k] = str(v)
		}
	}
	if sec, ok := k8sFind(objs, "Secret", "partners-secrets"); ok {
		for k, v := range get(sec.doc, "stringData").(map[string]any) {
			env[k] = str(v)
		}
	}
	d, ok := k8sFind(objs, "Deployment", deployment)
	if !ok {
		t.Fatalf("k8s: no Deployment %s", deployment)
	}
	for _, e := range list(containers(podSpec(d))[0]["env"]) {
		if v, ok := get(e, "value").(string); ok {
			env[str(get(e, "name"))] = v
		}
	}
	return env
}

func mountedIn(spec map[string]any, path string) bool {
	if path == "" {
		return false
	}
	for _, c := range containers(spec) {
		for _, m := range list(c["volumeMounts"]) {
			if strings.HasPrefix(path, strings.TrimSuffix(str(get(m, "mountPath")), "/")+"/") {
				return true
			}
		}
	}
	return false
}

// TestK8sGRPCHardened: in the cluster xDS, ext_authz and the rate-limit
// service run mutual TLS from config (the files mounted where the config
// says), Envoy reaches ext_authz and the rate-limit service over TLS with its
// client certificate mounted, and NetworkPolicies let only the Envoys (and
// for xDS the rate-limit service) reach the gRPC ports, and only the
// rate-limit service reach Redis.
func TestK8sGRPCHardened(t *testing.T) {
	def := defaults(t)
	objs := k8sObjects(t)
	cfgYAML := []byte(k8sConfigYAML(t, objs))
	for _, comp := range []string{"control-plane", "edge"} {
		cfg, err := config.Parse(cfgYAML, lookupIn(k8sEnv(t, objs, comp)))
		if err != nil {
			t.Fatal(err)
		}
		d, _ := k8sFind(objs, "Deployment", comp)
		var files []string
		switch comp {
		case "control-plane":
			s := cfg.XDS.ServerTLS
			files = []string{s.CertFile, s.KeyFile, s.ClientCAFile}
		case "edge":
			s := cfg.Edge.ServerTLS
			files = []string{s.CertFile, s.KeyFile, s.ClientCAFile}
		}
		for _, f := range files {
			if f == "" || !mountedIn(podSpec(d), f) {
				t.Errorf("k8s %s: its gRPC server's TLS file %q is unset or under no mount (want mutual TLS)", comp, f)
			}
		}
		if comp == "control-plane" {
			g := cfg.XDS.GRPCTLS
			if !g.Enabled {
				t.Error("k8s: xds.grpc_tls is off: Envoy would reach ext_authz and the rate-limit service in plaintext")
			}
			for _, o := range objs {
				if o.kind() == "Deployment" && strings.HasPrefix(o.name(), "envoy") {
					for _, f := range []string{g.CAPath, g.CertPath, g.KeyPath} {
						if !mountedIn(podSpec(o), f) {
							t.Errorf("k8s %s: xds.grpc_tls file %s is under no mount", o.name(), f)
						}
					}
				}
			}
		}
	}

	// NetworkPolicies: who may reach which port.
	want := map[string]struct {
		port int
		from []string
	}{
		"control-plane": {port(t, "listeners.xds", def.Listeners.XDS), []string{"envoy", "ratelimit"}},
		"edge":          {port(t, "listeners.ext_authz", def.Listeners.ExtAuthz), []string{"envoy"}},
		"ratelimit":     {8081, []string{"envoy"}},
		"redis":         {6379, []string{"ratelimit"}},
	}
	for target, w := range want {
		var np k8sObject
		found := false
		for _, o := range objs {
			if o.kind() == "NetworkPolicy" && str(get(o.doc, "spec", "podSelector", "matchLabels", "app.kubernetes.io/name")) == target {
				np, found = o, true
			}
		}
		if !found {
			t.Errorf("k8s: no NetworkPolicy selects %s", target)
			continue
		}
		if !slices.Contains(list(get(np.doc, "spec", "policyTypes")), any("Ingress")) {
			t.Errorf("k8s NetworkPolicy %s: not an Ingress policy", np.name())
		}
		for _, rule := range list(get(np.doc, "spec", "ingress")) {
			var ports []int
			for _, p := range list(get(rule, "ports")) {
				ports = append(ports, atoi(str(get(p, "port"))))
			}
			if !slices.Contains(ports, w.port) {
				continue
			}
			var from []string
			for _, f := range list(get(rule, "from")) {
				from = append(from, str(get(f, "podSelector", "matchLabels", "app.kubernetes.io/name")))
			}
			slices.Sort(from)
			if len(from) == 0 || !slices.Equal(from, w.from) {
				t.Errorf("k8s NetworkPolicy %s: port %d is reachable from %v, want only %v", np.name(), w.port, from, w.from)
			}
		}
	}
}
