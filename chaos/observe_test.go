package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/schemas"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// What the observers read: only public surfaces — Kafka topics, the
// receivers, the ROI and tenant APIs, the ClickHouse delivery log, the
// processes' /metrics and logs.

// tailer follows topics from their start (read committed) into memory.
type tailer struct {
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	recs   map[string][]*kgo.Record
}

func (d *deployment) tail(topics ...string) *tailer {
	for i := range topics {
		topics[i] = d.names.Topic(topics[i])
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.kafka.Brokers()...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tailer{cl: cl, cancel: cancel, done: make(chan struct{}), recs: map[string][]*kgo.Record{}}
	go func() {
		defer close(tl.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				tl.mu.Lock()
				tl.recs[r.Topic] = append(tl.recs[r.Topic], r)
				tl.mu.Unlock()
			})
		}
	}()
	d.t.Cleanup(tl.close)
	return tl
}

func (tl *tailer) close() {
	tl.cancel()
	<-tl.done
	tl.cl.Close()
}

func (tl *tailer) records(topic string) []*kgo.Record {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]*kgo.Record(nil), tl.recs[topic]...)
}

// touchpoints returns the distinct touchpoints the edge recorded for users.
func (d *deployment) touchpoints(tl *tailer, users map[string]bool) []schemas.Touchpoint {
	seen := map[string]bool{}
	var out []schemas.Touchpoint
	for _, r := range tl.records(d.names.Topic(schemas.TopicTouchpoints)) {
		var t schemas.Touchpoint
		if json.Unmarshal(r.Value, &t) != nil || !users[t.UserID] || seen[t.ID] {
			continue
		}
		seen[t.ID] = true
		out = append(out, t)
	}
	return out
}

// deadLetters returns, per tenant id, the event ids on the webhooks DLQ.
func (d *deployment) deadLetters(tl *tailer) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, r := range tl.records(d.names.Topic(schemas.TopicDLQ)) {
		var dl schemas.DeadLetter
		if json.Unmarshal(r.Value, &dl) != nil {
			continue
		}
		if out[dl.TenantID] == nil {
			out[dl.TenantID] = map[string]bool{}
		}
		out[dl.TenantID][dl.EventID] = true
	}
	return out
}

// roi reads every partner × model row from a running attribution process.
func (d *deployment) roi(ctx context.Context) ([]roiRow, error) {
	var last error
	for _, p := range d.running(roleAttribution) {
		var resp struct {
			Rows []roiRow `json:"rows"`
		}
		if err := d.getJSON(ctx, p, "/api/v1/analytics/roi?window=30", &resp); err != nil {
			last = err
			continue
		}
		return resp.Rows, nil
	}
	return nil, fmt.Errorf("ROI API: %v", last)
}

// loggedDelivered counts, per tenant, the delivery ids the ClickHouse
// delivery log holds as delivered.
func (d *deployment) loggedDelivered(ctx context.Context) (map[string]int, error) {
	var ids []string
	for _, tn := range d.tenants {
		ids = append(ids, tn.ID)
	}
	rows, err := d.conn.Query(ctx, chsql.DemoDeliveryOutcomes.SQL, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var tenant, outcome string
		var n uint64
		if err := rows.Scan(&tenant, &outcome, &n); err != nil {
			return nil, err
		}
		if outcome == schemas.OutcomeDelivered {
			out[tenant] = int(n)
		}
	}
	return out, rows.Err()
}

// caughtUp reports whether the scenario's consumer groups that read topic
// have committed at least the offsets in ends.
func (d *deployment) committedAtLeast(ctx context.Context, ends kadm.ListedOffsets, topic string) bool {
	adm := kadm.NewClient(d.admin)
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		return false
	}
	found := false
	for _, g := range groups.Groups() {
		if !strings.HasPrefix(g, d.names.Prefix) {
			continue
		}
		offs, err := adm.FetchOffsets(ctx, g)
		if err != nil {
			return false
		}
		reads := false
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == topic {
				reads = true
			}
		})
		if !reads {
			continue
		}
		found = true
		ok := true
		ends.Each(func(e kadm.ListedOffset) {
			if e.Topic != topic || e.Offset == 0 {
				return
			}
			c, has := offs.Lookup(e.Topic, e.Partition)
			if !has || c.At < e.Offset {
				ok = false
			}
		})
		if !ok {
			return false
		}
	}
	return found
}

// tenantView is the part of a tenant the registry check compares.
type tenantView struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Tier      string          `json:"tier"`
	Status    string          `json:"status"`
	RateLimit json.RawMessage `json:"rate_limit,omitempty"`
	Features  json.RawMessage `json:"features,omitempty"`
	Keys      []struct {
		ID string `json:"id"`
	} `json:"keys"`
	Endpoints []struct {
		ID         string   `json:"id"`
		URL        string   `json:"url"`
		EventTypes []string `json:"event_types"`
		Disabled   bool     `json:"disabled"`
		Secrets    []struct {
			ID string `json:"id"`
		} `json:"secrets"`
	} `json:"endpoints"`
	Version int64 `json:"version"`
}

// registryView lists the scenario's tenants as process p serves them.
func (d *deployment) registryView(ctx context.Context, p *proc) (map[string]string, error) {
	var resp struct {
		Tenants []tenantView `json:"tenants"`
	}
	if err := d.getJSON(ctx, p, "/api/v1/tenants", &resp); err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	for _, tn := range append(append([]*tenant{}, d.tenants...), d.churn...) {
		mine[tn.ID] = true
	}
	out := map[string]string{}
	for _, v := range resp.Tenants {
		if mine[v.ID] || strings.HasSuffix(v.Name, strings.TrimSuffix(d.names.Prefix, ".")) {
			b, _ := json.Marshal(v)
			out[v.ID] = string(b)
		}
	}
	return out, nil
}

// metrics samples the processes' /metrics while a scenario runs and
// keeps, per process incarnation, the last value of every partners_*
// counter and the highest value of every partners_* gauge.
type metrics struct {
	prefix   string // the scenario's topic prefix, cut from label values
	mu       sync.Mutex
	notReady map[string]int                // role -> /readyz samples that did not answer 200 (a running process)
	samples  map[string]int                // role -> /readyz samples
	counters map[string]map[string]float64 // incarnation -> series -> last value
	gauges   map[string]float64            // series -> max
	stop     chan struct{}
	done     chan struct{}
}

func (d *deployment) sampleMetrics(every time.Duration) *metrics {
	m := &metrics{prefix: d.names.Prefix, notReady: map[string]int{}, samples: map[string]int{}, counters: map[string]map[string]float64{}, gauges: map[string]float64{}, stop: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(m.done)
		defer hc.CloseIdleConnections()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			for _, p := range d.allProcs() {
				if p.Running() {
					m.scrape(hc, p)
				}
			}
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *metrics) scrape(hc *http.Client, p *proc) {
	p.mu.Lock()
	inc := fmt.Sprintf("%s/%d", p, p.incarnation)
	p.mu.Unlock()
	// What a probe sees: /readyz of a running process.
	ready := false
	if resp, err := hc.Get("http://" + p.admin + "/readyz"); err == nil {
		ready = resp.StatusCode == http.StatusOK
		resp.Body.Close()
	}
	m.mu.Lock()
	m.samples[p.role]++
	if !ready {
		m.notReady[p.role]++
	}
	m.mu.Unlock()
	resp, err := hc.Get("http://" + p.admin + "/metrics")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counters[inc] == nil {
		m.counters[inc] = map[string]float64{}
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "partners_") {
			continue
		}
		for _, s := range f.GetMetric() {
			key := name + labels(s, m.prefix)
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				m.counters[inc][key] = s.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				m.gauges[key] = max(m.gauges[key], s.GetGauge().GetValue())
			}
		}
	}
}

func labels(s *dto.Metric, prefix string) string {
	var ls []string
	for _, l := range s.GetLabel() {
		switch l.GetName() {
		case "tenant_id", "group": // per scenario: drop, so figures add up across runs
			continue
		}
		ls = append(ls, l.GetName()+"="+strings.TrimPrefix(l.GetValue(), prefix))
	}
	if len(ls) == 0 {
		return ""
	}
	sort.Strings(ls)
	return "{" + strings.Join(ls, ",") + "}"
}

// readiness returns, per role, the share of /readyz samples of its running
// processes that did not answer 200 ("2/40").
func (m *metrics) readiness() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for role, n := range m.samples {
		out[role] = fmt.Sprintf("%d/%d", m.notReady[role], n)
	}
	return out
}

// totals stops the sampler and returns each counter summed over every
// incarnation of every process, and the gauges' maxima.
func (m *metrics) totals() (counters, gauges map[string]float64) {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	counters = map[string]float64{}
	for _, series := range m.counters {
		for k, v := range series {
			counters[k] += v
		}
	}
	return counters, m.gauges
}

// logSummary counts the warnings and errors the processes logged during
// the scenario, by level and message.
func (d *deployment) logSummary() map[string]int {
	out := map[string]int{}
	for _, ps := range d.procs {
		for _, p := range ps {
			f, err := os.Open(p.log)
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var line struct {
					Level string `json:"level"`
					Msg   string `json:"msg"`
				}
				if json.Unmarshal(sc.Bytes(), &line) != nil {
					if t := strings.TrimSpace(sc.Text()); t != "" && !strings.HasPrefix(t, "{") {
						out[p.role+" stderr: "+clip(t, 120)]++
					}
					continue
				}
				if line.Level == "WARN" || line.Level == "ERROR" {
					out[p.role+" "+line.Level+": "+line.Msg]++
				}
			}
			f.Close()
		}
	}
	return out
}

// logLine is what the suite reads of a process's log line.
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	// UncommittedSince: a TxnStage's abort, when the oldest record whose
	// work it redoes was polled.
	UncommittedSince time.Time `json:"uncommitted_since"`
}

// logLines returns the log lines of role's processes whose message
// contains word (case-insensitive).
func (d *deployment) logLines(role, word string) []logLine {
	var out []logLine
	for _, p := range d.procs[role] {
		f, err := os.Open(p.log)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line logLine
			if json.Unmarshal(sc.Bytes(), &line) == nil && strings.Contains(strings.ToLower(line.Msg), word) {
				out = append(out, line)
			}
		}
		f.Close()
	}
	return out
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// kafkaDiagnosis describes, for a scenario that did not settle or catch
// up, where Kafka says the work stands: each of the scenario's consumer
// groups (state, members, the partitions it lags on) and each partition
// whose last stable offset trails its high watermark (an open
// transaction holds read-committed consumers there), with the producers
// that hold it open.
func (d *deployment) kafkaDiagnosis(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(d.admin)
	var out []string
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return []string{fmt.Sprintf("kafka diagnosis: list groups: %v", err)}
	}
	var groups []string
	for _, g := range listed.Groups() {
		if strings.HasPrefix(g, d.names.Prefix) {
			groups = append(groups, g)
		}
	}
	sort.Strings(groups)
	lags, err := adm.Lag(ctx, groups...)
	if err != nil {
		out = append(out, fmt.Sprintf("kafka diagnosis: group lag: %v", err))
	}
	for _, g := range groups {
		l, ok := lags[g]
		if !ok {
			continue
		}
		if err := l.Error(); err != nil {
			out = append(out, fmt.Sprintf("group %s: %v", g, err))
			continue
		}
		var behind []string
		for _, ml := range l.Lag.Sorted() {
			if ml.Lag > 0 || ml.Err != nil {
				s := fmt.Sprintf("%s/%d %d→%d", strings.TrimPrefix(ml.Topic, d.names.Prefix), ml.Partition, ml.Commit.At, ml.End.Offset)
				if ml.Err != nil {
					s += fmt.Sprintf(" (%v)", ml.Err)
				}
				behind = append(behind, s)
			}
		}
		line := fmt.Sprintf("group %s: %s, %d members, lag %d", strings.TrimPrefix(g, d.names.Prefix), l.State, len(l.Members), l.Lag.Total())
		if len(behind) > 0 {
			line += " on " + strings.Join(behind, ", ")
		}
		out = append(out, line)
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return append(out, fmt.Sprintf("kafka diagnosis: list topics: %v", err))
	}
	var names []string
	for _, tn := range topics.Names() {
		if strings.HasPrefix(tn, d.names.Prefix) {
			names = append(names, tn)
		}
	}
	hwm, herr := adm.ListEndOffsets(ctx, names...)
	lso, lerr := adm.ListCommittedOffsets(ctx, names...)
	if herr != nil || lerr != nil {
		return append(out, fmt.Sprintf("kafka diagnosis: end offsets: %v / %v", herr, lerr))
	}
	// __consumer_offsets too: a transaction left open there holds a
	// group's offset fetch (UNSTABLE_OFFSET_COMMIT), so its members
	// consume nothing, with no LSO of the scenario's topics to show it.
	held := kadm.TopicsSet{"__consumer_offsets": nil}
	var open []string
	lso.Each(func(o kadm.ListedOffset) {
		h, ok := hwm.Lookup(o.Topic, o.Partition)
		if ok && o.Err == nil && o.Offset < h.Offset {
			held.Add(o.Topic, o.Partition)
			open = append(open, fmt.Sprintf("%s/%d LSO %d < HWM %d", strings.TrimPrefix(o.Topic, d.names.Prefix), o.Partition, o.Offset, h.Offset))
		}
	})
	sort.Strings(open)
	if len(open) == 0 {
		out = append(out, "no partition of the scenario's topics held by an open transaction (LSO = HWM)")
	} else {
		out = append(out, "held by open transactions: "+strings.Join(open, ", "))
	}
	prods, err := adm.DescribeProducers(ctx, held)
	if err != nil {
		return append(out, fmt.Sprintf("kafka diagnosis: describe producers: %v", err))
	}
	var ps []string
	prods.EachProducer(func(p kadm.DescribedProducer) {
		if p.CurrentTxnStartOffset >= 0 {
			ps = append(ps, fmt.Sprintf("%s/%d producer %d epoch %d txn from %d (last write %s)", strings.TrimPrefix(p.Topic, d.names.Prefix), p.Partition, p.ProducerID, p.ProducerEpoch, p.CurrentTxnStartOffset, time.UnixMilli(p.LastTimestamp).UTC().Format("15:04:05.000")))
		}
	})
	sort.Strings(ps)
	if len(ps) > 0 {
		out = append(out, "open transactions (every __consumer_offsets partition included): "+strings.Join(ps, ", "))
	} else {
		out = append(out, "no open transaction on those partitions or on __consumer_offsets")
	}
	return out
}
