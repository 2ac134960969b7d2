package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
)

// Roles of the processes, in start order.
const (
	roleControlPlane = "control-plane"
	roleEdge         = "edge"
	roleWebhooks     = "webhooks"
	roleAttribution  = "attribution"
)

// deployment is one scenario's system: its own topics (a random topic
// prefix) on its Kafka, its own ClickHouse database, the partners
// processes, four partner receivers with their tenants, and the clients the
// load and the observers use.
type deployment struct {
	t       *testing.T
	dir     string
	kafka   kafkaTarget
	cfg     *config.Config // what the processes run with (the generated file, their environment)
	cfgPath string
	env     map[string]string
	skipped []string           // override keys this tree's config does not have
	procs   map[string][]*proc // written by the test goroutine only, under procsMu
	procsMu sync.Mutex         // procs against the metrics sampler's reads
	ownCH   bool               // on the scenario's own ClickHouse
	names   kafka.Names

	prod  *kgo.Client // the product and finance systems' producer
	admin *kgo.Client // reads topics back (read committed)
	authz authv3.AuthorizationClient
	conn  driver.Conn
	hc    *http.Client

	tenants []*tenant // one per receiver: the partners of the load
	churn   []*tenant // tenants the registry churn changes
	rl      *rateLimit
}

type tenant struct {
	ID, Name, Key, Secret, Tier string
	rcv                         *receiver
}

type deployOptions struct {
	kafka  kafkaTarget
	chAddr string
	twins  bool // two instances of control-plane, webhooks and attribution
	// rateLimit: the region's global rate-limit service (own Redis) and
	// the Envoy calls to it for every partner call
	rateLimit bool
	dir       string
	ownCH     bool // chAddr is the scenario's own ClickHouse
}

// deploy starts a scenario's system and registers its teardown.
func deploy(t *testing.T, prof *Profile, o deployOptions) *deployment {
	t.Helper()
	id := testenv.RandomID()
	d := &deployment{t: t, dir: o.dir, kafka: o.kafka, ownCH: o.ownCH, procs: map[string][]*proc{}, hc: &http.Client{Timeout: 15 * time.Second}}
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	root := testenv.RepoRoot(t)
	base, err := os.ReadFile(filepath.Join(root, "config", "partners-engine.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, skipped, err := applyOverrides(base, prof.Overrides)
	if err != nil {
		t.Fatal(err)
	}
	d.skipped = skipped
	d.cfgPath = filepath.Join(d.dir, "partners.yaml")
	if err := os.WriteFile(d.cfgPath, out, 0o600); err != nil {
		t.Fatal(err)
	}
	d.env = map[string]string{
		"PARTNERS_KAFKA_BROKERS":   strings.Join(o.kafka.Brokers(), ","),
		"PARTNERS_TOPIC_PREFIX":    "chaos" + id + ".",
		"PARTNERS_CLICKHOUSE_ADDR": o.chAddr,
		"PARTNERS_CLICKHOUSE_DB":   "partners_chaos_" + id,
		"PARTNERS_ADMIN_TOKEN":     "chaos-admin-token-" + id + "-" + testenv.RandomID(),
		"PARTNERS_KEY_PEPPER":      "chaos-pepper-" + id + "-" + testenv.RandomID(),
		"PARTNERS_LOG_FORMAT":      "json",
		"PARTNERS_LOG_LEVEL":       "info",
		"PARTNERS_KAFKA_DATA_DIR":  filepath.Join(d.dir, "kfake-unused"),
		"PARTNERS_EDGE_SPOOL_DIR":  filepath.Join(d.dir, "edge-spool"),
		"PARTNERS_ADMIN_LISTEN":    "127.0.0.1:0",
		"PARTNERS_XDS_LISTEN":      "127.0.0.1:0",
		"PARTNERS_EXTAUTHZ_LISTEN": "127.0.0.1:0",
		"PARTNERS_WEBHOOK_ALLOW":   receiverAllow,
	}
	if lvl := os.Getenv("PARTNERS_CHAOS_LOG_LEVEL"); lvl != "" { // debug: franz-go's logs too
		d.env["PARTNERS_LOG_LEVEL"] = lvl
	}
	for _, kv := range o.kafka.Env() {
		k, v, _ := strings.Cut(kv, "=")
		d.env[k] = v
	}
	d.cfg, err = config.Parse(out, func(k string) (string, bool) { v, ok := d.env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the generated configuration %s: %v", d.cfgPath, err)
	}
	d.names = kafka.Names{Prefix: d.cfg.Kafka.TopicPrefix}
	bin := partnersBinary(t)
	t.Cleanup(d.teardown)

	// Migrations once, before the processes: `partners migrate`.
	mctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mig := exec.CommandContext(mctx, bin, "--config", d.cfgPath, "migrate")
	mig.Env = d.processEnv(nil)
	if b, err := mig.CombinedOutput(); err != nil {
		t.Fatalf("partners migrate: %v\n%s", err, b)
	}

	n := 1
	if o.twins {
		n = 2
	}
	for _, role := range []string{roleControlPlane, roleEdge, roleWebhooks, roleAttribution} {
		count := n
		if role == roleEdge {
			count = 1
		}
		for i := 0; i < count; i++ {
			d.newProc(t, bin, role)
		}
	}
	// the control plane first (the tenants topic and the API), then the rest at once
	for _, p := range d.procs[roleControlPlane] {
		p.Start(t)
	}
	for _, p := range d.procs[roleControlPlane] {
		p.WaitReady(t, 2*time.Minute)
	}
	for _, role := range []string{roleEdge, roleWebhooks, roleAttribution} {
		for _, p := range d.procs[role] {
			p.Start(t)
		}
	}
	for _, role := range []string{roleEdge, roleWebhooks, roleAttribution} {
		for _, p := range d.procs[role] {
			p.WaitReady(t, 2*time.Minute)
		}
	}

	// The product's producer rides through broker outages: it retries until
	// a record is acknowledged, for as long as the suite waits.
	cluster := kafka.Cluster{Config: d.cfg.Kafka, Brokers: o.kafka.Brokers(), Log: slog.New(slog.DiscardHandler)}
	if d.prod, err = cluster.NewClient(kgo.RecordRetries(math.MaxInt32), kgo.RecordDeliveryTimeout(prof.Settle), kgo.RetryTimeout(prof.Settle)); err != nil {
		t.Fatal(err)
	}
	if d.admin, err = kgo.NewClient(kgo.SeedBrokers(o.kafka.Brokers()...), kgo.FetchIsolationLevel(kgo.ReadCommitted())); err != nil {
		t.Fatal(err)
	}
	gc, err := grpc.NewClient(d.procs[roleEdge][0].grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gc.Close() })
	d.authz = authv3.NewAuthorizationClient(gc)
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	defer ccancel()
	if d.conn, err = chdb.Open(cctx, d.cfg.ClickHouse); err != nil {
		t.Fatal(err)
	}

	d.createTenants(t)
	if o.rateLimit {
		d.rl = d.startRateLimit(t)
	}
	d.waitGroupsStable(t, n)
	return d
}

// waitGroupsStable waits until every consumer group of the deployment —
// the webhooks stages, the delivery log, attribution — has all its members
// and a settled assignment, so the load starts on a formed system (a
// member joining later rebalances its group, and a rebalance makes the
// webhooks processor redo unfinished deliveries).
func (d *deployment) waitGroupsStable(t *testing.T, members int) {
	t.Helper()
	adm := kadm.NewClient(d.admin)
	want := 3 + d.cfg.Partner.Webhooks.Retry.MaxAttempts - 1 // first stage, retries, delivery log, attribution
	deadline := time.Now().Add(2 * time.Minute)
	last := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		listed, err := adm.ListGroups(ctx)
		var mine []string
		if err == nil {
			for _, g := range listed.Groups() {
				if strings.HasPrefix(g, d.names.Prefix) {
					mine = append(mine, g)
				}
			}
		}
		ok := err == nil && len(mine) >= want
		last = fmt.Sprintf("%d of %d groups (err %v)", len(mine), want, err)
		if ok {
			described, err := adm.DescribeGroups(ctx, mine...)
			if err != nil {
				ok, last = false, err.Error()
			}
			for _, g := range described.Sorted() {
				want := members
				if strings.HasSuffix(g.Group, ".attribution") {
					// each attribution process joins with
					// partner.attribution.workers members
					want = members * max(1, d.cfg.Partner.Attribution.Workers)
				}
				if g.Err != nil || g.State != "Stable" || len(g.Members) != want {
					ok = false
					last = fmt.Sprintf("group %s: state %s, %d members (want %d), err %v", g.Group, g.State, len(g.Members), want, g.Err)
					break
				}
			}
		}
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer groups not stable after 2m: %s", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *deployment) newProc(t *testing.T, bin, role string) *proc {
	slot := len(d.procs[role])
	p := &proc{role: role, slot: slot, bin: bin, cfg: d.cfgPath,
		admin: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		log:   filepath.Join(d.dir, fmt.Sprintf("%s-%d.log", role, slot))}
	extra := map[string]string{
		"PARTNERS_ADMIN_LISTEN": p.admin,
		"PARTNERS_INSTANCE_ID":  fmt.Sprintf("chaos-%s-%s-%d", strings.TrimSuffix(d.names.Prefix, "."), role, slot),
	}
	switch role {
	case roleEdge:
		p.grpc = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		extra["PARTNERS_EXTAUTHZ_LISTEN"] = p.grpc
	case roleControlPlane:
		p.grpc = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		extra["PARTNERS_XDS_LISTEN"] = p.grpc
	}
	p.env = d.processEnv(extra)
	d.procsMu.Lock()
	d.procs[role] = append(d.procs[role], p)
	d.procsMu.Unlock()
	return p
}

// allProcs is a snapshot of every process, for goroutines other than the
// test's (the metrics sampler) while the test may add one.
func (d *deployment) allProcs() []*proc {
	d.procsMu.Lock()
	defer d.procsMu.Unlock()
	var out []*proc
	for _, ps := range d.procs {
		out = append(out, ps...)
	}
	return out
}

// processEnv is the environment of a process: the suite's own minus every
// PARTNERS_* variable, then the deployment's, then extra.
func (d *deployment) processEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PARTNERS_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	for k, v := range d.env {
		if _, over := extra[k]; !over {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// running returns the live processes of a role.
func (d *deployment) running(role string) []*proc {
	var out []*proc
	for _, p := range d.procs[role] {
		if p.Running() {
			out = append(out, p)
		}
	}
	return out
}

func (d *deployment) teardown() {
	var wg sync.WaitGroup
	for _, ps := range d.procs {
		for _, p := range ps {
			wg.Add(1)
			go func() { defer wg.Done(); p.Stop(d.t) }()
		}
	}
	wg.Wait()
	for _, tn := range d.tenants {
		tn.rcv.Close()
	}
	d.hc.CloseIdleConnections()
	if d.prod != nil {
		d.prod.Close()
	}
	if d.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var topics []string
		for _, s := range kafka.Specs(d.cfg.Kafka, d.cfg.Partner.Webhooks) {
			topics = append(topics, s.Name)
		}
		_, _ = kadm.NewClient(d.admin).DeleteTopics(ctx, topics...)
		cancel()
		d.admin.Close()
	}
	if d.conn != nil {
		d.conn.Close()
		if !d.ownCH { // the scenario's own ClickHouse goes with its data directory
			dropLater(d.cfg.ClickHouse)
		}
	}
}

// The scenarios' databases on the shared ClickHouse are dropped in the
// background: DROP DATABASE on a loaded 18.16 has taken more than 30 s
// (waiting on its tables' locks), time the next scenario need not wait.
// TestFaults waits for every drop before it ends (waitDrops).
var (
	drops    sync.WaitGroup
	dropMu   sync.Mutex
	dropErrs []string
)

func dropLater(c config.ClickHouse) {
	drops.Add(1)
	go func() {
		defer drops.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := chdb.DropDatabase(ctx, c); err != nil {
			dropMu.Lock()
			dropErrs = append(dropErrs, fmt.Sprintf("drop database %s: %v", c.Database, err))
			dropMu.Unlock()
		}
	}()
}

// waitDrops waits for the background drops and returns their errors.
func waitDrops() []string {
	drops.Wait()
	dropMu.Lock()
	defer dropMu.Unlock()
	return append([]string(nil), dropErrs...)
}

// errUnknown marks an API call that reached a control plane but got no
// answer: the change may or may not have been made. errRefused marks one
// that reached none (every connection refused): nothing was changed.
var (
	errUnknown = errors.New("no answer")
	errRefused = errors.New("no control plane reachable")
)

// api calls the admin API on the first control plane that takes the
// connection (a twin takes over when one is down). It returns the HTTP
// status, or an error wrapping errUnknown or errRefused.
func (d *deployment) api(ctx context.Context, method, path string, in, out any) (int, error) {
	var body []byte
	if in != nil {
		body, _ = json.Marshal(in)
	}
	var last error
	for _, p := range d.procs[roleControlPlane] {
		req, err := http.NewRequestWithContext(ctx, method, "http://"+p.admin+path, bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+d.cfg.Admin.Token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := d.hc.Do(req)
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				last = err
				continue // never reached this instance: try the next
			}
			return 0, fmt.Errorf("%w from %s: %v", errUnknown, p, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if out != nil && resp.StatusCode < 300 {
			if err := json.Unmarshal(b, out); err != nil {
				return resp.StatusCode, fmt.Errorf("%s %s: %v: %s", method, path, err, b)
			}
		}
		if resp.StatusCode >= 300 {
			return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, nil
	}
	return 0, fmt.Errorf("%w: %v", errRefused, last)
}

// getJSON reads a route of one process.
func (d *deployment) getJSON(ctx context.Context, p *proc, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.cfg.Admin.Token)
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %d %s", path, p, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

type created struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	APIKey        string `json:"api_key"`
	WebhookSecret string `json:"webhook_secret"`
}

// createTenants creates the four partners (one per receiver mode,
// subscribed to order.created) and the churn tenants, and waits until the
// edge accepts every key.
func (d *deployment) createTenants(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	suffix := strings.TrimSuffix(d.names.Prefix, ".")
	create := func(name, tier, url string, events []string) created {
		var c created
		req := map[string]any{"name": name, "tier": tier, "webhook_url": url, "events": events}
		if _, err := d.api(ctx, http.MethodPost, "/api/v1/tenants", req, &c); err != nil {
			t.Fatalf("create tenant %s: %v", name, err)
		}
		return c
	}
	for _, mode := range []string{healthy, flaky, down, strict} {
		rcv, err := newReceiver(mode)
		if err != nil {
			t.Fatal(err)
		}
		tier := "standard"
		if mode == down {
			tier = "sandbox"
		}
		c := create(fmt.Sprintf("Chaos %s %s", mode, suffix), tier, rcv.URL(), []string{"order.created"})
		rcv.addSecret(c.WebhookSecret)
		d.tenants = append(d.tenants, &tenant{ID: c.ID, Name: c.Name, Key: c.APIKey, Secret: c.WebhookSecret, Tier: tier, rcv: rcv})
	}
	for i := 0; i < 3; i++ {
		// Subscribed to an event type the load never publishes: the
		// churn changes the registry, not the deliveries.
		c := create(fmt.Sprintf("Chaos churn %d %s", i, suffix), "sandbox", d.tenants[0].rcv.URL(), []string{"customer.created"})
		d.churn = append(d.churn, &tenant{ID: c.ID, Name: c.Name, Key: c.APIKey})
	}
	for _, tn := range append(append([]*tenant{}, d.tenants...), d.churn...) {
		deadline := time.Now().Add(time.Minute)
		for {
			code, err := check(ctx, d.authz, checkInput{Key: tn.Key, Path: "/api/v1/partners/orders", Region: d.cfg.Regions[0].Name, RequestID: "ready-" + tn.ID})
			if err == nil && code == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the edge never accepted tenant %s's key (code %d, err %v)", tn.Name, code, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
