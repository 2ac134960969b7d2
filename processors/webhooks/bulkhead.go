package webhooks

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// bulkhead bounds concurrency at three levels: per endpoint (a FIFO lane
// with at most perEndpoint requests in flight), per tenant (its share of the
// global slots, whatever its number of endpoints) and overall. A hanging
// endpoint therefore holds at most its lane's slots, and a tenant with many
// hanging endpoints at most its share of the process.
type bulkhead struct {
	perEndpoint int
	perTenant   int
	global      chan struct{}

	mu      sync.Mutex
	lanes   map[string]*lane         // by endpoint id
	tenants map[string]*tenantSlots  // by tenant id
	tests   map[string]*atomic.Int32 // test calls in flight, by tenant id
}

func newBulkhead(global, perTenant, perEndpoint int) *bulkhead {
	return &bulkhead{perEndpoint: perEndpoint, perTenant: perTenant, global: make(chan struct{}, global),
		lanes: map[string]*lane{}, tenants: map[string]*tenantSlots{}, tests: map[string]*atomic.Int32{}}
}

type tenantSlots struct {
	sem      chan struct{}
	lastUsed atomic.Int64
}

// lane is one endpoint's queue: jobs start in submission order with at most
// max in flight. The goroutine that finishes a job runs the next one: no
// goroutine per waiting job. When its queue is long and nothing completed
// for a while (a hanging or very slow endpoint), the scheduler holds new
// deliveries instead of queueing them, so such an endpoint never piles up
// work; a healthy endpoint with a backlog keeps completing and just queues.
type lane struct {
	max      int
	mu       sync.Mutex
	running  int
	queue    []func()
	progress atomic.Int64 // unix nanos of the last completed job (or creation)
}

func (b *bulkhead) lane(endpointID string) *lane {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.lanes[endpointID]
	if !ok {
		l = &lane{max: b.perEndpoint}
		l.progress.Store(time.Now().UnixNano())
		b.lanes[endpointID] = l
	}
	return l
}

// submit runs fn now if a slot is free, else queues it.
func (l *lane) submit(fn func()) {
	l.mu.Lock()
	if l.running < l.max {
		l.running++
		l.mu.Unlock()
		go l.work(fn)
		return
	}
	l.queue = append(l.queue, fn)
	l.mu.Unlock()
}

func (l *lane) work(fn func()) {
	for {
		fn()
		l.progress.Store(time.Now().UnixNano())
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.running--
			l.mu.Unlock()
			return
		}
		fn = l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.mu.Unlock()
	}
}

// saturated reports whether the lane holds more than queueCap waiting jobs
// and completed nothing for stall.
func (l *lane) saturated(queueCap int, stall time.Duration) bool {
	l.mu.Lock()
	n := len(l.queue)
	l.mu.Unlock()
	return n > queueCap && time.Since(time.Unix(0, l.progress.Load())) > stall
}

func (l *lane) idleFor(now time.Time, d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running == 0 && len(l.queue) == 0 && now.Sub(time.Unix(0, l.progress.Load())) >= d
}

// acquire takes a slot of the tenant and a global slot, waiting until both
// are free or ctx ends. The caller runs in the endpoint's lane.
func (b *bulkhead) acquire(ctx context.Context, tenantID string) (release func(), err error) {
	b.mu.Lock()
	ts, ok := b.tenants[tenantID]
	if !ok {
		ts = &tenantSlots{sem: make(chan struct{}, b.perTenant)}
		b.tenants[tenantID] = ts
	}
	b.mu.Unlock()
	ts.lastUsed.Store(time.Now().UnixNano())
	select {
	case ts.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case b.global <- struct{}{}:
	case <-ctx.Done():
		<-ts.sem
		return nil, ctx.Err()
	}
	return func() {
		<-b.global
		<-ts.sem
		ts.lastUsed.Store(time.Now().UnixNano())
	}, nil
}

// tryTest takes one of the tenant's test-call slots without waiting.
func (b *bulkhead) tryTest(tenantID string, limit int) (release func(), ok bool) {
	b.mu.Lock()
	n, found := b.tests[tenantID]
	if !found {
		n = &atomic.Int32{}
		b.tests[tenantID] = n
	}
	b.mu.Unlock()
	if n.Add(1) > int32(limit) {
		n.Add(-1)
		return nil, false
	}
	return func() { n.Add(-1) }, true
}

// sweep drops idle lanes and tenant slots, and those of endpoints and
// tenants that no longer exist once they are idle.
func (b *bulkhead) sweep(now time.Time, endpointExists, tenantExists func(string) bool, idleFor time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, l := range b.lanes {
		if l.idleFor(now, 0) && (!endpointExists(id) || l.idleFor(now, idleFor)) {
			delete(b.lanes, id)
		}
	}
	for id, ts := range b.tenants {
		unused := now.Sub(time.Unix(0, ts.lastUsed.Load()))
		if len(ts.sem) == 0 && unused >= min(idleFor, time.Second) && (!tenantExists(id) || unused >= idleFor) {
			delete(b.tenants, id)
		}
	}
	for id, n := range b.tests {
		if n.Load() == 0 {
			delete(b.tests, id)
		}
	}
}

func (b *bulkhead) sizes() (lanes, tenants int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lanes), len(b.tenants)
}
