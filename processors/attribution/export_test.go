package attribution

// Fault seams for the tests of package attribution_test.

import "sync"

// FailInsertsOf makes the processor's raw inserts fail with a permanent
// error whenever a batch holds a touchpoint or conversion with one of ids:
// records "ClickHouse cannot store".
func FailInsertsOf(p *Processor, ids ...string) {
	bad := map[string]bool{}
	for _, id := range ids {
		bad[id] = true
	}
	p.faults.insert = func(touches, convs []string) error {
		for _, id := range append(touches, convs...) {
			if bad[id] {
				return &PermanentError{Err: errUnstorable(id)}
			}
		}
		return nil
	}
}

type errUnstorable string

func (e errUnstorable) Error() string { return "test: ClickHouse cannot store record " + string(e) }

// LoseRollupAcks makes the processor believe the next n rollup INSERTs
// failed although they landed: what a connection lost while the server
// commits looks like.
func LoseRollupAcks(p *Processor, n int) {
	var mu sync.Mutex
	p.faults.afterRollup = func() error {
		mu.Lock()
		defer mu.Unlock()
		if n == 0 {
			return nil
		}
		n--
		return errLostAck{}
	}
}

type errLostAck struct{}

func (errLostAck) Error() string { return "test: connection lost after the rollup insert was sent" }

// PauseFirstInsert holds the processor's first batch before its raw
// inserts (after it decided which records are new): reached is closed when
// the batch gets there, release lets it go on. Later batches pass.
func PauseFirstInsert(p *Processor) (reached <-chan struct{}, release func()) {
	at, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	p.faults.insert = func(_, _ []string) error {
		first := false
		once.Do(func() { first = true })
		if first {
			close(at)
			<-gate
		}
		return nil
	}
	var rel sync.Once
	return at, func() { rel.Do(func() { close(gate) }) }
}
