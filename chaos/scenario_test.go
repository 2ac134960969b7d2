package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// scenario is one fault injected into a running, loaded system.
type scenario struct {
	name  string
	kafka string // "cluster" or "single"
	twins bool   // two instances of control-plane, webhooks and attribution
	ownCH bool   // on a ClickHouse of its own (the fault stops it)
	// repeats: the fault hits the delivery path (a webhooks process or the
	// broker under it), so deliveries made just before it may be made again
	// (at-least-once HTTP): bounded by the in-flight window (see
	// repeatRule for the other redo points).
	repeats bool
	// kafkaDown: the fault makes Kafka as a whole unavailable (the only
	// broker), for FaultSeconds.
	kafkaDown bool
	// noExits: no process may exit by itself (the fault is one they must
	// ride out without a supervisor).
	noExits   bool
	pending   string // not run: why
	rateLimit bool   // partner calls also go through the global rate limit
	inject    func(t *testing.T, f *faultEnv) string
}

// faultEnv is what a fault acts on.
type faultEnv struct {
	d       *deployment
	prof    *Profile
	cluster *testenv.KafkaNodes
	single  *singleKafka
	ch      *ownClickHouse
	// the Redis outage of the rate-limit scenario
	rlDown, rlUp time.Time
}

// killAndRestart SIGKILLs the first process of role, leaves it down for the
// outage and starts it again on the same configuration and instance id.
func killAndRestart(role string) func(t *testing.T, f *faultEnv) string {
	return func(t *testing.T, f *faultEnv) string {
		p := f.d.procs[role][0]
		p.Kill(t)
		time.Sleep(f.prof.Outage)
		p.Start(t)
		p.WaitReady(t, 2*time.Minute)
		return fmt.Sprintf("SIGKILL %s, restarted after %v", p, f.prof.Outage)
	}
}

// killTwin SIGKILLs one of two instances of role for good: the other takes
// over its partitions (or its API clients).
func killTwin(role string) func(t *testing.T, f *faultEnv) string {
	return func(t *testing.T, f *faultEnv) string {
		p := f.d.procs[role][0]
		p.Kill(t)
		return fmt.Sprintf("SIGKILL %s of 2, not restarted", p)
	}
}

var scenarios = []*scenario{
	{name: "kafka-leader-kill", kafka: "cluster", repeats: true,
		inject: func(t *testing.T, f *faultEnv) string {
			topic := f.d.names.Topic(schemas.TopicEvents)
			leader := int(f.cluster.Leader(topic, 0))
			f.cluster.Kill(leader)
			time.Sleep(f.prof.Outage)
			f.cluster.Start(leader)
			var topics []string
			for _, s := range kafka.Specs(f.d.cfg.Kafka, f.d.cfg.Partner.Webhooks) {
				topics = append(topics, s.Name)
			}
			f.cluster.WaitInSync(3*time.Minute, topics...)
			return fmt.Sprintf("SIGKILL broker %d (leader of %s/0), restarted after %v, back in sync", leader, schemas.TopicEvents, f.prof.Outage)
		}},
	{name: "kafka-single-restart", kafka: "single", repeats: true, kafkaDown: true,
		inject: func(t *testing.T, f *faultEnv) string {
			f.single.Kill(t)
			time.Sleep(f.prof.Outage)
			f.single.Start(t)
			return fmt.Sprintf("SIGKILL the only broker, restarted after %v", f.prof.Outage)
		}},
	// Twice the clients' retry window (30 s) and longer than a stage's
	// commit timeout (60 s): a webhooks stage cannot end its transaction,
	// replaces its Kafka session and goes on; no process exits (the
	// webhooks process used to, and needed a supervisor).
	{name: "kafka-single-long-outage", kafka: "single", repeats: true, kafkaDown: true, noExits: true,
		inject: func(t *testing.T, f *faultEnv) string {
			outage := max(f.prof.Outage, 2*producerRetryWindow)
			f.single.Kill(t)
			time.Sleep(outage)
			f.single.Start(t)
			return fmt.Sprintf("SIGKILL the only broker, restarted after %v (longer than the clients' %v retry window)", outage, producerRetryWindow)
		}},
	{name: "webhooks-kill", kafka: "cluster", repeats: true, inject: killAndRestart(roleWebhooks)},
	{name: "attribution-kill", kafka: "cluster", inject: killAndRestart(roleAttribution)},
	{name: "control-plane-kill", kafka: "cluster", inject: killAndRestart(roleControlPlane)},
	{name: "clickhouse-restart", kafka: "single", ownCH: true,
		inject: func(t *testing.T, f *faultEnv) string {
			f.ch.Kill()
			time.Sleep(f.prof.Outage)
			f.ch.Start()
			return fmt.Sprintf("SIGKILL ClickHouse with batches in flight, restarted after %v", f.prof.Outage)
		}},
	{name: "webhooks-twin", kafka: "single", twins: true, repeats: true, inject: killTwin(roleWebhooks)},
	{name: "attribution-twin", kafka: "single", twins: true, inject: killTwin(roleAttribution)},
	{name: "control-plane-twin", kafka: "single", twins: true, inject: killTwin(roleControlPlane)},
	{name: "ratelimit-down", kafka: "single", rateLimit: true,
		inject: func(t *testing.T, f *faultEnv) string {
			f.rlDown = time.Now()
			f.d.rl.redis.Kill()
			time.Sleep(f.prof.Outage)
			f.d.rl.redis.Start()
			f.rlUp = time.Now()
			return fmt.Sprintf("SIGKILL the rate-limit service's Redis, restarted after %v", f.prof.Outage)
		}},
}

func findScenario(name string) *scenario {
	for _, s := range scenarios {
		if s.name == name {
			return s
		}
	}
	return nil
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

// stack is what the scenarios share: the cluster, the own single broker,
// the shared ClickHouse address, and the run directory.
type stack struct {
	cluster  *testenv.KafkaNodes
	single   *singleKafka
	sharedCH string
	dir      string
}

// runScenario deploys, loads, faults, settles and evaluates one scenario.
// It fills res as it goes, so a scenario that stops (a t.Fatal in the
// harness) still reports what it got.
func runScenario(t *testing.T, prof *Profile, st *stack, sc *scenario, round int, res *result) {
	if sc.pending != "" {
		res.Pending = sc.pending
		return
	}
	start := time.Now()
	fe := &faultEnv{prof: prof, single: st.single}
	res.Dir = filepath.Join(st.dir, fmt.Sprintf("%s-%d", sc.name, round))
	o := deployOptions{twins: sc.twins, rateLimit: sc.rateLimit, chAddr: st.sharedCH, dir: filepath.Join(st.dir, fmt.Sprintf("%s-%d", sc.name, round))}
	if sc.kafka == "cluster" {
		// A fresh handle waits for all three brokers (another package's
		// fault test may have one down) and holds the cluster's fault lock
		// for the scenario: no other test's broker fault mixes with ours.
		fe.cluster = testenv.KafkaCluster(t)
		fe.cluster.Exclusive()
		o.kafka = clusterKafka{fe.cluster}
	} else {
		o.kafka = st.single
	}
	if sc.ownCH {
		fe.ch = startOwnClickHouse(t)
		o.chAddr = fe.ch.addr
		o.ownCH = true
	}
	res.Kafka = o.kafka.Name()
	d := deploy(t, prof, o)
	fe.d = d
	res.DeploySeconds = time.Since(start).Seconds()
	start = time.Now() // load time zero (the repeat samples count from here)
	res.SkippedOverrides = d.skipped
	tl := d.tail(schemas.TopicTouchpoints, schemas.TopicDLQ)
	mx := d.sampleMetrics(time.Second)
	ld := newLoad(d, prof, fmt.Sprintf("%s%d_%s", strings.ReplaceAll(sc.name, "-", ""), round, testenv.RandomID()[:4]))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() { ld.run(ctx, stop); close(loadDone) }()

	// The "down for a while" partner goes down halfway into the steady
	// load and stays down across the fault.
	rcvDone := make(chan error, 1)
	go func() {
		time.Sleep(prof.Load.BeforeFault / 2)
		rcv := d.tenants[2].rcv
		rcv.GoDown()
		time.Sleep(prof.ReceiverDown)
		rcvDone <- rcv.GoUp()
	}()

	time.Sleep(prof.Load.BeforeFault)
	faultStart := time.Now()
	res.Fault = sc.inject(t, fe)
	faultEnd := time.Now()
	res.FaultSeconds = faultEnd.Sub(faultStart).Seconds()
	if sc.kafkaDown {
		res.KafkaDownSeconds = res.FaultSeconds
	}
	lastSeq := ld.lastSeqBefore(faultEnd)
	inputs := []string{d.names.Topic(schemas.TopicTouchpoints), d.names.Topic(schemas.TopicConversions), d.names.Topic(schemas.TopicCosts)}
	var ends kadm.ListedOffsets
	for ends == nil {
		ectx, ecancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := kadm.NewClient(d.admin).ListEndOffsets(ectx, inputs...)
		ecancel()
		if err == nil && e.Error() == nil {
			ends = e
		} else {
			time.Sleep(200 * time.Millisecond)
		}
	}
	recovered := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			if d.healthyHas(ld, lastSeq) && d.committedAll(ctx, ends, inputs) {
				recovered <- time.Now()
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()

	time.Sleep(prof.Load.AfterFault)
	close(stop)
	<-loadDone
	if err := <-rcvDone; err != nil {
		t.Fatal(err)
	}
	res.LoadSeconds = time.Since(start).Seconds()
	settleStart := time.Now()

	// Settle: wait until everything the load started is done, or the
	// settle bound passes; then count.
	deadline := time.Now().Add(prof.Settle)
	var ev evaluation
	for {
		ev = d.evaluate(ctx, ld, tl)
		if ev.settled(res.KafkaDownSeconds) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	res.SettleSeconds = time.Since(settleStart).Seconds()
	if !ev.settled(res.KafkaDownSeconds) {
		// Not settled within the bound: note where Kafka says the work
		// stands, and keep each processor's goroutine stacks in its log
		// for the diagnosis.
		for _, n := range d.kafkaDiagnosis(ctx) {
			res.Notes = append(res.Notes, "kafka: "+n)
		}
		for _, role := range []string{roleWebhooks, roleAttribution} {
			for _, p := range d.running(role) {
				p.Dump(t)
				res.Notes = append(res.Notes, fmt.Sprintf("%s did not settle: goroutine stacks (SIGQUIT) in %s; waiting ≥1 min: %s", p, p.log, stackSummary(p.log)))
			}
		}
	}
	// Caught up: the healthy partner has every event and the attribution
	// group has committed past the inputs' ends. Settled can come first
	// (its records are in ClickHouse before their offsets are committed),
	// so wait for it within what is left of the settle bound.
	wait := time.NewTimer(max(time.Until(deadline), 0))
	select {
	case at := <-recovered:
		res.RecoverSeconds = at.Sub(faultEnd).Seconds()
	case <-wait.C:
		res.RecoverSeconds = -1
	}
	wait.Stop()
	if res.RecoverSeconds < 0 && ev.settled(res.KafkaDownSeconds) {
		for _, n := range d.kafkaDiagnosis(ctx) {
			res.Notes = append(res.Notes, "kafka: "+n)
		}
	}
	res.fill(ev)
	res.FaultAt = faultStart.Sub(start).Seconds()
	for _, tn := range d.tenants {
		res.RepeatSample = append(res.RepeatSample, tn.rcv.repeatSample(3, start)...)
	}
	// Redo points: the fault, when it hits the delivery path, and every
	// transaction the webhooks processor logs as aborted (it re-polls and
	// redoes the unfinished records, HTTP attempts included).
	var redo []window
	if sc.repeats {
		redo = append(redo, window{faultStart.Add(-prof.RepeatWindow), faultEnd.Add(prof.RepeatWindow)})
	}
	// An abort redoes the work of every record polled since the oldest one
	// it had not committed (the stage logs when that was), and the attempts
	// in flight when it aborts still reach their partners (their outcome is
	// dropped with the generation), up to an attempt timeout after it.
	aborts := d.logLines(roleWebhooks, "abort")
	res.TxnAborts = len(aborts)
	for _, l := range aborts {
		from := l.Time.Add(-prof.RepeatWindow)
		if !l.UncommittedSince.IsZero() && l.UncommittedSince.Before(from) {
			from = l.UncommittedSince
		}
		redo = append(redo, window{from, l.Time.Add(prof.RepeatWindow)})
	}
	// A webhooks process that exits by itself (it cannot end a
	// transaction while Kafka is down) redoes what it had not committed,
	// as a SIGKILL does.
	for _, p := range d.procs[roleWebhooks] {
		for _, at := range p.ownExitTimes() {
			redo = append(redo, window{at.Add(-prof.RepeatWindow), at})
		}
	}
	for _, tn := range d.tenants {
		res.RepeatBound += tn.rcv.succeededIn(redo)
		n, sample := tn.rcv.repeatedOutside(redo, start, 3)
		res.RepeatedOutside += n
		res.RepeatOutsideSample = append(res.RepeatOutsideSample, sample...)
	}
	for _, w := range redo {
		res.RedoWindows = append(res.RedoWindows, fmt.Sprintf("%.2fs–%.2fs", w.from.Sub(start).Seconds(), w.to.Sub(start).Seconds()))
	}
	regStart := time.Now()
	if d.rl != nil {
		s := d.rl.summarize(fe.rlDown, fe.rlUp)
		res.RateLimit = &s
	}
	res.RegistryDiffs = d.checkRegistry(t, ld)
	res.RegistrySeconds = time.Since(regStart).Seconds()
	res.RegistryEqual = len(res.RegistryDiffs) == 0
	res.Counters, res.Gauges = mx.totals()
	res.NotReady = mx.readiness()
	for _, ps := range d.procs {
		for _, p := range ps {
			if e := p.ownExits(); len(e) > 0 {
				if res.ProcessExits == nil {
					res.ProcessExits = map[string][]string{}
				}
				res.ProcessExits[p.String()] = e
			}
		}
	}
	res.Logs = d.logSummary()
	res.MustNotExit = sc.noExits
	res.judge()
	res.Dir = o.dir
}

// healthyHas reports whether the healthy partner has every event up to
// seq, each acknowledged by Kafka.
func (d *deployment) healthyHas(ld *load, seq int) bool {
	dels := d.tenants[0].rcv.deliveries()
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, e := range ld.events {
		if e.seq > seq {
			break
		}
		if !e.acked {
			return false
		}
		if x := dels[e.id]; x == nil || !x.ok {
			return false
		}
	}
	return true
}

// committedAll: the attribution processor has committed past ends on every
// input topic.
func (d *deployment) committedAll(ctx context.Context, ends kadm.ListedOffsets, topics []string) bool {
	for _, tp := range topics {
		if !d.committedAtLeast(ctx, ends, tp) {
			return false
		}
	}
	return true
}

// evaluation is what the observers saw at one moment.
type evaluation struct {
	events, expected, made, lost, repeated int
	repeatRequests                         int
	repeatedBy                             map[string]int
	dlqExpected, dlqGot, dlqUnexpected     int
	logMissing, badSigs, bodyChanged       int
	badSigSample                           []string
	checksOK, denied, checkErrs, touches   int
	conversions, costs                     int
	roiCells                               int
	roiDiffs                               []string
	roiErr                                 error
	logErr                                 error
	lostSample                             []string
	churn                                  map[string]int
}

// settled: everything the load started is done. Touchpoints count only
// when Kafka was never unavailable for longer than the edge producer
// retries (longer, the edge drops them; see result.judge).
func (e evaluation) settled(kafkaDownSeconds float64) bool {
	touches := e.touches >= e.checksOK // the edge spools and replays through any outage
	return e.lost == 0 && e.dlqGot == e.dlqExpected && e.dlqUnexpected == 0 && e.logMissing == 0 && e.logErr == nil &&
		e.roiErr == nil && len(e.roiDiffs) == 0 && touches
}

func (d *deployment) evaluate(ctx context.Context, ld *load, tl *tailer) evaluation {
	ev := evaluation{repeatedBy: map[string]int{}}
	events, convs, costs := ld.acked()
	ev.events, ev.conversions, ev.costs = len(events), len(convs), len(costs)
	dlq := d.deadLetters(tl)
	logged, err := d.loggedDelivered(ctx)
	ev.logErr = err
	for _, tn := range d.tenants {
		dels := tn.rcv.deliveries()
		n, sample := tn.rcv.badSignatures()
		ev.badSigs += n
		ev.badSigSample = append(ev.badSigSample, sample...)
		made := 0
		for _, e := range events {
			x := dels[e.id]
			if x != nil {
				// counted per delivery (the bound counts deliveries); the
				// requests after success beside it
				ev.repeatRequests += x.repeats
				if x.repeats > 0 {
					ev.repeated++
					ev.repeatedBy[tn.rcv.mode]++
				}
				if x.bodies > 1 {
					ev.bodyChanged++
				}
			}
			if tn.rcv.mode == strict && e.seq%5 == 0 {
				ev.dlqExpected++
				if !dlq[tn.ID][e.id] {
					ev.lost++
					ev.sampleLost(fmt.Sprintf("%s: %s not dead-lettered", tn.rcv.mode, e.id))
				}
				continue
			}
			ev.expected++
			if x != nil && x.ok {
				made++
			} else {
				ev.lost++
				ev.sampleLost(fmt.Sprintf("%s: %s not delivered", tn.rcv.mode, e.id))
			}
		}
		ev.made += made
		for eid := range dlq[tn.ID] {
			ev.dlqGot++
			if !(tn.rcv.mode == strict && seqOf(eid)%5 == 0) {
				ev.dlqUnexpected++
			}
		}
		if err == nil && logged[tn.ID] < made {
			ev.logMissing += made - logged[tn.ID]
		}
	}
	ld.mu.Lock()
	ev.checksOK, ev.denied, ev.checkErrs = ld.checksOK, ld.denied, ld.checkErrs
	users := map[string]bool{}
	for u := range ld.users {
		users[u] = true
	}
	ev.churn = map[string]int{}
	for _, op := range ld.churn {
		ev.churn[op.outcome]++
	}
	ld.mu.Unlock()
	touches := d.touchpoints(tl, users)
	ev.touches = len(touches)
	var partners []string
	for _, tn := range d.tenants {
		partners = append(partners, tn.ID)
	}
	want, err := oracleROI(d.cfg.Partner.Attribution, partners, touches, convs, costs)
	if err != nil {
		ev.roiErr = err
		return ev
	}
	ev.roiCells = len(want)
	rows, err := d.roi(ctx)
	if err != nil {
		ev.roiErr = err
		return ev
	}
	ev.roiDiffs = compareROI(want, rows)
	return ev
}

func (e *evaluation) sampleLost(s string) {
	if len(e.lostSample) < 5 {
		e.lostSample = append(e.lostSample, s)
	}
}

// seqOf is the sequence number in an event id evt_<tag>_<seq>.
func seqOf(id string) int {
	i := strings.LastIndexByte(id, '_')
	n := 0
	for _, c := range id[i+1:] {
		n = n*10 + int(c-'0')
	}
	return n
}

// checkRegistry compares the tenant registry after recovery: every running
// control plane and a fresh one (rebuilt from the tenants topic) serve
// the same tenants; each churn tenant is in a state the acknowledged
// changes allow; the delivery tenants are as created; the edge decides by
// the same state.
func (d *deployment) checkRegistry(t *testing.T, ld *load) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fresh := d.newProc(t, partnersBinary(t), roleControlPlane)
	fresh.Start(t)
	fresh.WaitReady(t, 2*time.Minute)
	var diffs []string
	views := map[string]map[string]string{}
	var ref map[string]string
	var refName string
	for _, p := range d.running(roleControlPlane) {
		v, err := d.registryView(ctx, p)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		views[p.String()] = v
		if ref == nil {
			ref, refName = v, p.String()
			continue
		}
		for id, a := range ref {
			if b := v[id]; b != a {
				diffs = append(diffs, fmt.Sprintf("tenant %s: %s has %s, %s has %s", id, refName, a, p, b))
			}
		}
		for id := range v {
			if _, ok := ref[id]; !ok {
				diffs = append(diffs, fmt.Sprintf("tenant %s only on %s", id, p))
			}
		}
	}
	fresh.Stop(t)
	if ref == nil {
		return append(diffs, "no control plane answered")
	}
	if n := len(d.tenants) + len(d.churn); len(ref) != n {
		diffs = append(diffs, fmt.Sprintf("%d tenants, want %d", len(ref), n))
	}
	for _, tn := range d.tenants {
		var v tenantView
		if err := json.Unmarshal([]byte(ref[tn.ID]), &v); err != nil {
			diffs = append(diffs, fmt.Sprintf("partner %s missing", tn.Name))
			continue
		}
		if v.Status != schemas.StatusActive || len(v.Endpoints) != 1 || v.Endpoints[0].Disabled || v.Endpoints[0].URL != tn.rcv.URL() {
			diffs = append(diffs, fmt.Sprintf("partner %s changed: %s", tn.Name, ref[tn.ID]))
		}
	}
	ld.mu.Lock()
	ops := append([]churnOp(nil), ld.churn...)
	ld.mu.Unlock()
	region := d.cfg.Regions[0].Name
	for _, tn := range d.churn {
		status := map[string]bool{schemas.StatusActive: true}
		rpm := map[int]bool{0: true}
		for _, op := range ops {
			if op.tenant != tn.ID {
				continue
			}
			if op.outcome != "ok" && op.outcome != "unknown" {
				continue
			}
			set := func(m map[string]bool, v string) {
				if op.outcome == "ok" {
					clear(m)
				}
				m[v] = true
			}
			switch op.kind {
			case "rate":
				if op.outcome == "ok" {
					clear(rpm)
				}
				rpm[op.rpm] = true
			case "suspend":
				set(status, schemas.StatusSuspended)
			case "activate":
				set(status, schemas.StatusActive)
			}
		}
		var v tenantView
		if err := json.Unmarshal([]byte(ref[tn.ID]), &v); err != nil {
			diffs = append(diffs, fmt.Sprintf("churn tenant %s missing", tn.Name))
			continue
		}
		var rl struct {
			RPM int `json:"requests_per_minute"`
		}
		_ = json.Unmarshal(v.RateLimit, &rl)
		if !status[v.Status] {
			diffs = append(diffs, fmt.Sprintf("churn tenant %s: status %s, acknowledged changes allow %v", tn.Name, v.Status, keys(status)))
		}
		if !rpm[rl.RPM] || !status[v.Status] {
			var hist []string
			for _, op := range ops {
				if op.tenant == tn.ID {
					hist = append(hist, op.String())
				}
			}
			diffs = append(diffs, fmt.Sprintf("churn tenant %s (version %d) changes: %s", tn.Name, v.Version, strings.Join(hist, "; ")))
		}
		if !rpm[rl.RPM] {
			diffs = append(diffs, fmt.Sprintf("churn tenant %s: rate limit %d rpm, acknowledged changes allow %v", tn.Name, rl.RPM, keys(rpm)))
		}
		// The edge decides by the same state (it evicts a changed tenant).
		want := v.Status == schemas.StatusActive
		var code int
		var err error
		for i := 0; i < 50; i++ {
			code, err = check(ctx, d.authz, checkInput{Key: tn.Key, Path: "/api/v1/partners/orders", Region: region, RequestID: fmt.Sprintf("registry-%s-%d", tn.ID, i)})
			if err == nil && (code == 0) == want {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || (code == 0) != want {
			diffs = append(diffs, fmt.Sprintf("churn tenant %s is %s but the edge answers %d (err %v)", tn.Name, v.Status, code, err))
		}
	}
	return diffs
}

func keys[K comparable](m map[K]bool) []K {
	var out []K
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}
