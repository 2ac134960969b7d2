package webhooks

import (
	"context"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
)

// fifoHandler delivers the messages of ordered endpoints. The fan-out puts
// their deliveries on partners.webhooks.fifo keyed by endpoint id, so one
// partition holds an endpoint's messages in order; this stage keeps one
// queue per endpoint and has at most one message of it in flight: the next
// waits (consuming no attempt) until the previous is delivered or
// dead-lettered. The head is retried in place, with the same backoff,
// breaker holds, Retry-After and max age as any delivery, instead of
// moving to a retry topic.
//
// The cost: an ordered endpoint delivers one message per round trip; its
// backlog while its head is retried waits in memory, up to fifo_window
// messages per partition of the FIFO topic, beyond which the partition
// stops being fetched, delaying the other ordered endpoints that share it
// (never the unordered ones, which do not use this topic).
type fifoHandler struct {
	p  *Processor
	mu sync.Mutex
	qs map[string]*fifoQueue // by endpoint id
}

type fifoQueue struct {
	gen   context.Context // the ticket context (stage generation) of the queued jobs
	items []*job          // items[0] is in flight
}

func newFIFOHandler(p *Processor) *fifoHandler {
	return &fifoHandler{p: p, qs: map[string]*fifoQueue{}}
}

// Accept implements kafka.TxnHandler.
func (h *fifoHandler) Accept(r *kgo.Record, t *kafka.Ticket) kafka.Accepted {
	rctx := kafka.Extract(context.Background(), r)
	task, err := decodeTask(r.Value)
	if err != nil {
		return kafka.Accepted{Out: h.p.malformedTask(rctx, r, err)}
	}
	task.FIFO = true
	j := &job{task: task, parent: rctx, ticket: t, stage: "fifo", done: h.done}
	h.mu.Lock()
	q := h.qs[task.EndpointID]
	if q == nil || q.gen != t.Context() {
		// A new generation (rebalance): the old queue's records are polled
		// again from the committed offset; its jobs are dropped.
		q = &fifoQueue{gen: t.Context()}
		h.qs[task.EndpointID] = q
		ep := task.EndpointID
		context.AfterFunc(q.gen, func() {
			// Shutdown or rebalance: the waiting messages will not start;
			// the head ends through its own path.
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.qs[ep] != q {
				return
			}
			for _, old := range q.items[min(1, len(q.items)):] {
				old.ticket.Drop()
			}
			q.items = q.items[:min(1, len(q.items))]
			delete(h.qs, ep)
		})
	}
	q.items = append(q.items, j)
	head := len(q.items) == 1
	h.mu.Unlock()
	if head {
		h.p.schedule(j)
	}
	return kafka.Accepted{Parts: 1}
}

// done takes a head's outcome: retried in place (the attempt logs are
// produced with the message's final records), or finished, which starts
// the next message.
func (h *fifoHandler) done(j *job, _ outcome, d decision, recs []*kgo.Record) {
	h.mu.Lock()
	q := h.qs[j.task.EndpointID]
	current := q != nil && len(q.items) > 0 && q.items[0] == j
	if d.action == actRetry || d.action == actHold {
		j.pending = append(j.pending, recs...)
		h.mu.Unlock()
		if current {
			h.p.schedule(j)
		} else {
			j.ticket.Drop()
		}
		return
	}
	var next *job
	if current {
		q.items[0] = nil
		q.items = q.items[1:]
		if len(q.items) > 0 {
			next = q.items[0]
		} else {
			delete(h.qs, j.task.EndpointID)
		}
	}
	h.mu.Unlock()
	j.ticket.Done(append(j.pending, recs...)...)
	if next != nil {
		h.p.schedule(next)
	}
}
