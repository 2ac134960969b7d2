package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// load is the steady load of a scenario and its record of what was
// acknowledged: the input of the oracle.
type load struct {
	d    *deployment
	prof *Profile
	tag  string // scenario and round, in every id

	mu        sync.Mutex
	events    []*eventRec
	convs     []*convRec
	costs     []*costRec
	users     map[string]bool
	checksOK  int
	denied    int // partner calls the edge refused (every key is valid: must stay 0)
	checkErrs int // calls that got no answer
	churn     []churnOp

	wg sync.WaitGroup
}

type eventRec struct {
	id    string
	seq   int
	at    time.Time // when the product published it
	acked bool
	err   error
}

type convRec struct {
	c     schemas.Conversion
	acked bool
}

type costRec struct {
	c     schemas.Cost
	acked bool
}

// churnOp is one tenant change the registry churn asked for.
type churnOp struct {
	tenant  string
	kind    string // rate | suspend | activate
	rpm     int
	outcome string // ok | rejected | refused | unknown
	at      time.Time
	took    time.Duration
	detail  string // the error, for an outcome other than ok
}

func (op churnOp) String() string {
	s := fmt.Sprintf("%s %s", op.at.UTC().Format("15:04:05.000"), op.kind)
	if op.kind == "rate" {
		s += fmt.Sprintf(" %d", op.rpm)
	}
	s += fmt.Sprintf(" → %s in %v", op.outcome, op.took.Round(time.Millisecond))
	if op.detail != "" {
		s += " (" + clip(op.detail, 160) + ")"
	}
	return s
}

func newLoad(d *deployment, prof *Profile, tag string) *load {
	return &load{d: d, prof: prof, tag: tag, users: map[string]bool{}}
}

// every calls f at rate per second until stop; f gets a sequence number.
func (l *load) every(rate float64, stop <-chan struct{}, f func(i int)) {
	if rate <= 0 {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				f(i)
			}
		}
	}()
}

// run drives the load until stop is closed, then waits for every record
// to be acknowledged (or to fail for good) and every user to finish.
func (l *load) run(ctx context.Context, stop <-chan struct{}) {
	l.every(l.prof.Load.EventsPerSec, stop, func(i int) { l.event(ctx, i) })
	l.every(l.prof.Load.UsersPerSec, stop, func(i int) {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.user(ctx, i) }()
	})
	l.every(l.prof.Load.CostsPerSec, stop, func(i int) { l.cost(ctx, i) })
	l.every(l.prof.Load.ChurnPerSec, stop, func(i int) { l.change(ctx, i) })
	<-stop
	l.wg.Wait()
	fctx, cancel := context.WithTimeout(ctx, l.prof.Settle)
	defer cancel()
	_ = l.d.prod.Flush(fctx)
}

func (l *load) produce(ctx context.Context, topic, key string, v any, done func(error)) {
	b, err := json.Marshal(v)
	if err != nil {
		done(err)
		return
	}
	r := &kgo.Record{Topic: l.d.names.Topic(topic), Key: []byte(key), Value: b}
	kafka.Inject(ctx, r)
	l.d.prod.Produce(ctx, r, func(_ *kgo.Record, err error) { done(err) })
}

// event publishes product event seq (order.created), fanned out to all
// four partners.
func (l *load) event(ctx context.Context, seq int) {
	ev := schemas.Event{SchemaVersion: "1", ID: fmt.Sprintf("evt_%s_%06d", l.tag, seq), Type: "order.created", Source: "chaos",
		OccurredAt: time.Now().UTC(),
		Data:       json.RawMessage(fmt.Sprintf(`{"order_id":"ord_%s_%d","amount":"%d.%02d","currency":"USD","seq":%d}`, l.tag, seq, 10+seq%90, seq%100, seq))}
	rec := &eventRec{id: ev.ID, seq: seq, at: time.Now()}
	l.mu.Lock()
	l.events = append(l.events, rec)
	l.mu.Unlock()
	l.produce(ctx, schemas.TopicEvents, ev.ID, ev, func(err error) {
		l.mu.Lock()
		rec.acked, rec.err = err == nil, err
		l.mu.Unlock()
	})
}

// user is one end user: calls through one to three partners (ext_authz
// Checks with UTM parameters, as Envoy sends them: the edge records a
// touchpoint for each), then converts; every fifth conversion is refunded
// a second later.
func (l *load) user(ctx context.Context, i int) {
	uid := fmt.Sprintf("user_%s_%05d", l.tag, i)
	l.mu.Lock()
	l.users[uid] = true
	l.mu.Unlock()
	n := 1 + i%3
	region := l.d.cfg.Regions[0].Name
	for k := 0; k < n; k++ {
		tn := l.d.tenants[(i+k)%len(l.d.tenants)]
		q := url.Values{"utm_source": {"partner"}, "utm_medium": {"api"}, "utm_campaign": {l.tag}}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		code, headers, md, err := checkFull(cctx, l.d.authz, checkInput{Key: tn.Key, Path: "/api/v1/partners/orders?" + q.Encode(), UserID: uid,
			Region: region, RequestID: fmt.Sprintf("%s-%d", uid, k)})
		cancel()
		if err == nil && code == 0 && l.d.rl != nil {
			l.d.rl.call(ctx, tn.Tier, "/api/v1/partners/orders", headers, md)
		}
		l.mu.Lock()
		switch {
		case err != nil:
			l.checkErrs++
		case code != 0:
			l.denied++
		default:
			l.checksOK++
		}
		l.mu.Unlock()
	}
	cur := []string{"USD", "EUR"}[i%2]
	c := schemas.Conversion{SchemaVersion: "1", ID: "conv_" + uid, UserID: uid, Kind: schemas.ConversionPurchase,
		Amount: decimal.New(int64(1000+(i*737)%9000), -2), Currency: cur, NewCustomer: i%4 == 0,
		OccurredAt: time.Now().UTC()}
	acked := l.conversion(ctx, c)
	if !acked || i%5 != 0 {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Second):
	}
	r := schemas.Conversion{SchemaVersion: "1", ID: "refund_" + uid, UserID: uid, Kind: schemas.ConversionRefund,
		Amount: c.Amount, Currency: c.Currency, RefundOf: c.ID, OccurredAt: time.Now().UTC()}
	l.conversion(ctx, r)
}

// conversion produces c and waits for its acknowledgement.
func (l *load) conversion(ctx context.Context, c schemas.Conversion) bool {
	rec := &convRec{c: c}
	l.mu.Lock()
	l.convs = append(l.convs, rec)
	l.mu.Unlock()
	done := make(chan error, 1)
	l.produce(ctx, schemas.TopicConversions, c.UserID, c, func(err error) { done <- err })
	err := <-done
	l.mu.Lock()
	rec.acked = err == nil
	l.mu.Unlock()
	return err == nil
}

// cost books a cost for the partners in turn (USD and GBP).
func (l *load) cost(ctx context.Context, i int) {
	tn := l.d.tenants[i%len(l.d.tenants)]
	c := schemas.Cost{SchemaVersion: "1", ID: fmt.Sprintf("cost_%s_%05d", l.tag, i), PartnerID: tn.ID,
		Amount: decimal.New(int64(250+(i*113)%750), -2), Currency: []string{"USD", "GBP"}[i%2], Category: "commission",
		OccurredAt: time.Now().UTC()}
	rec := &costRec{c: c}
	l.mu.Lock()
	l.costs = append(l.costs, rec)
	l.mu.Unlock()
	l.produce(ctx, schemas.TopicCosts, c.PartnerID, c, func(err error) {
		l.mu.Lock()
		rec.acked = err == nil
		l.mu.Unlock()
	})
}

// change is one registry churn step: a rate-limit override, a suspension
// or an activation of a churn tenant, through the admin API.
func (l *load) change(ctx context.Context, i int) {
	tn := l.d.churn[i%len(l.d.churn)]
	op := churnOp{tenant: tn.ID, kind: []string{"rate", "suspend", "activate"}[(i/len(l.d.churn))%3], rpm: 100 + i, at: time.Now()}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var code int
	var err error
	switch op.kind {
	case "rate":
		code, err = l.d.api(cctx, http.MethodPatch, "/api/v1/tenants/"+tn.ID, map[string]any{"rate_limit": map[string]int{"requests_per_minute": op.rpm, "burst_size": 5}}, nil)
	default:
		code, err = l.d.api(cctx, http.MethodPost, "/api/v1/tenants/"+tn.ID+"/"+op.kind, nil, nil)
	}
	op.took = time.Since(op.at)
	if err != nil {
		op.detail = err.Error()
	}
	switch {
	case err == nil:
		op.outcome = "ok"
	case errors.Is(err, errRefused):
		op.outcome = "refused"
	case code >= 400 && code < 500:
		op.outcome = "rejected"
	default: // no answer, or a 5xx after the request arrived
		op.outcome = "unknown"
	}
	l.mu.Lock()
	l.churn = append(l.churn, op)
	l.mu.Unlock()
}

// snapshot returns copies of the acknowledged inputs.
func (l *load) acked() (events []*eventRec, convs []schemas.Conversion, costs []schemas.Cost) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.acked {
			events = append(events, e)
		}
	}
	for _, c := range l.convs {
		if c.acked {
			convs = append(convs, c.c)
		}
	}
	for _, c := range l.costs {
		if c.acked {
			costs = append(costs, c.c)
		}
	}
	return events, convs, costs
}

// lastSeqBefore is the last event sequence number published before t.
func (l *load) lastSeqBefore(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	last := -1
	for _, e := range l.events {
		if e.at.Before(t) {
			last = e.seq
		}
	}
	return last
}
