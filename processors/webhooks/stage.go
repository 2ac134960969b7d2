package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

// A stage consumes one topic: stage 0 makes first attempts from
// partners.events.v1, stage n retries from partners.webhooks.retry.<n>.
//
// It is pipelined rather than batch-at-a-time: polled records are handed to
// per-delivery goroutines (bounded per endpoint and overall) and polling goes
// on while they run, so a slow endpoint never holds back the deliveries of
// other endpoints polled after it. Offsets are committed per partition up to
// the lowest record whose deliveries are not all finished (the watermark),
// inside the same Kafka transaction that produces the finished deliveries'
// retry/DLQ records and attempt logs: a crash re-delivers at most the
// unfinished window, never loses a delivery, and every move between topics
// is exactly once.
//
// A retry stage holds records that are not yet due in memory and pauses the
// partition (PauseFetchPartitions) until its last polled record is due, so a
// waiting record never blocks another partition or topic.
type stage struct {
	p     *Processor
	n     int
	label string
	topic string
	group string
	delay time.Duration
	log   *slog.Logger

	gen      atomic.Uint64
	stopping atomic.Bool
	inflight atomic.Int64
	results  chan *result
	done     chan struct{}
	httpCtx  context.Context

	// owned by the loop goroutine
	trackers    map[partKey]*tracker
	outstanding int
	paused      map[partKey]time.Time
	lastDue     map[partKey]time.Time
	lastWM      map[partKey]int64
	topicIDs    map[string][16]byte
	lastCommit  time.Time
	sess        *kgo.GroupTransactSession
	inTxn       bool
	produced    int // records produced in the open transaction
	produceErr  atomic.Pointer[error]

	timersMu sync.Mutex
	timers   map[*time.Timer]struct{} // deliveries waiting until due
}

type partKey struct {
	topic string
	part  int32
}

// tracker follows one partition's unfinished records in offset order.
type tracker struct {
	queue   []int64
	pending map[int64]int           // deliveries not finished, per offset
	outs    map[int64][]*kgo.Record // outputs of finished deliveries, held until the offset is committable
	head    int64                   // next offset after the last polled record
}

func (t *tracker) watermark() int64 {
	if len(t.queue) > 0 {
		return t.queue[0]
	}
	return t.head
}

type result struct {
	gen    uint64
	key    partKey
	offset int64
	recs   []*kgo.Record
}

const (
	pollWait       = 100 * time.Millisecond
	commitInterval = 50 * time.Millisecond
)

// maxOutstanding bounds the unfinished records a stage holds: it bounds
// memory, the deliveries repeated after a crash, and the wait of a record
// behind others of its partition for the commit.
func (s *stage) maxOutstanding() int { return max(4*s.p.wh.Concurrency, 256) }

func (p *Processor) newStage(n int) *stage {
	s := &stage{p: p, n: n, results: make(chan *result, 4096), done: make(chan struct{}),
		trackers: map[partKey]*tracker{}, paused: map[partKey]time.Time{}, lastDue: map[partKey]time.Time{},
		lastWM: map[partKey]int64{}, topicIDs: map[string][16]byte{}, timers: map[*time.Timer]struct{}{}}
	if n == 0 {
		s.label, s.topic = "first", p.names.Topic(schemas.TopicEvents)
		s.group = p.kafka.Group("webhooks")
	} else {
		s.label, s.topic = strconv.Itoa(n), p.names.Retry(n)
		s.group = p.kafka.Group("webhooks-retry-" + strconv.Itoa(n))
		s.delay = p.wh.Retry.Delay(n)
	}
	s.log = p.log.With("stage", s.label, "topic", s.topic)
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *stage) run(ctx context.Context) error {
	opts := append(s.p.kafka.Opts(),
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(s.topic),
		kgo.TransactionalID(s.group+"-"+s.p.inst),
		kgo.TransactionTimeout(20*time.Second),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10*time.Second),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("webhooks stage %s: %w", s.label, err)
	}
	httpCtx, cancelHTTP := context.WithCancel(context.WithoutCancel(ctx))
	s.httpCtx = httpCtx
	defer func() {
		cancelHTTP()
		close(s.done)
		sess.Close()
	}()
	s.sess = sess
	s.log.Debug("stage started", "group", s.group)
	for ctx.Err() == nil {
		if err := s.begin(); err != nil {
			return err
		}
		s.resumeDue(sess.Client())
		if room := s.maxOutstanding() - s.outstanding; room > 0 {
			wait := pollWait
			for _, until := range s.paused {
				wait = max(min(wait, time.Until(until)), 5*time.Millisecond)
			}
			pctx, cancel := context.WithTimeout(ctx, wait)
			fs := sess.PollRecords(pctx, room)
			cancel()
			if fs.IsClientClosed() {
				return nil
			}
			fs.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
					s.log.Warn("fetch error", "partition", p, "err", err)
				}
			})
			fs.EachRecord(func(r *kgo.Record) { s.accept(ctx, r) })
			s.pauseHeld(sess.Client())
		} else {
			select {
			case r := <-s.results:
				s.add(r)
			case <-time.After(pollWait):
			case <-ctx.Done():
			}
		}
		s.drain()
		if err := s.commit(sess, false); err != nil {
			return err
		}
	}
	// Shutdown: start nothing new, let started attempts finish (bounded by
	// the HTTP total timeout), commit what finished.
	s.stopping.Store(true)
	s.stopTimers()
	if err := s.begin(); err != nil {
		return err
	}
	deadline := time.Now().Add(s.p.wh.Timeouts.Total + time.Second)
	for s.inflight.Load() > 0 && time.Now().Before(deadline) {
		select {
		case r := <-s.results:
			s.add(r)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.drain()
	if err := s.commit(sess, true); err != nil {
		s.log.Warn("final commit failed; unfinished records will be delivered again", "err", err)
	}
	return nil
}

// accept registers a polled record and starts (or schedules) its deliveries.
func (s *stage) accept(ctx context.Context, r *kgo.Record) {
	k := partKey{r.Topic, r.Partition}
	tr := s.trackers[k]
	if tr == nil {
		tr = &tracker{pending: map[int64]int{}, outs: map[int64][]*kgo.Record{}}
		s.trackers[k] = tr
	}
	tr.head = r.Offset + 1
	var jobs []*job
	var dead []*kgo.Record
	due := time.Now()
	if s.n == 0 {
		jobs, dead = s.p.fanOut(ctx, r)
	} else {
		var j *job
		j, dead = s.p.retryJob(ctx, r)
		if j != nil {
			jobs = append(jobs, j)
			due = j.task.NotBefore
			s.lastDue[k] = due
		}
	}
	n := len(jobs)
	if len(dead) > 0 {
		n++
	}
	if n == 0 {
		return
	}
	tr.queue = append(tr.queue, r.Offset)
	tr.pending[r.Offset] = n
	s.outstanding++
	gen := s.gen.Load()
	if len(dead) > 0 {
		s.add(&result{gen: gen, key: k, offset: r.Offset, recs: dead})
	}
	queueCap := max(8*s.p.wh.PerEndpoint, 64)
	stall := min(time.Second, s.p.wh.Timeouts.Total)
	for _, j := range jobs {
		l := s.p.lane(j.endpoint.ID)
		run := func(skip string) {
			s.inflight.Add(1)
			defer s.inflight.Add(-1)
			if s.stopping.Load() || s.gen.Load() != gen {
				return
			}
			o := s.p.attempt(s.httpCtx, j, skip)
			if o.result == "cancelled" {
				return
			}
			res := &result{gen: gen, key: k, offset: r.Offset, recs: s.p.records(s.httpCtx, j, o, s.label)}
			select {
			case s.results <- res:
			case <-s.done:
			}
		}
		submit := func() {
			if l.saturated(queueCap, stall) {
				go run(errSaturated)
				return
			}
			l.submit(func() { run("") })
		}
		if d := time.Until(due); d > 0 {
			s.timersMu.Lock()
			var tm *time.Timer
			tm = time.AfterFunc(d, func() {
				s.timersMu.Lock()
				delete(s.timers, tm)
				s.timersMu.Unlock()
				submit()
			})
			s.timers[tm] = struct{}{}
			s.timersMu.Unlock()
		} else {
			submit()
		}
	}
}

// pauseHeld pauses every partition whose last polled record is not due yet,
// until it is: later records of a fixed-delay topic are due later still.
func (s *stage) pauseHeld(cl *kgo.Client) {
	now := time.Now()
	for k, due := range s.lastDue {
		delete(s.lastDue, k)
		if due.Sub(now) < 5*time.Millisecond {
			continue
		}
		until := due
		if cap := now.Add(s.delay); s.delay > 0 && until.After(cap) {
			until = cap // a long Retry-After must not hold records behind it
		}
		if _, ok := s.paused[k]; !ok {
			cl.PauseFetchPartitions(map[string][]int32{k.topic: {k.part}})
		}
		s.paused[k] = until
	}
}

func (s *stage) resumeDue(cl *kgo.Client) {
	now := time.Now()
	for k, until := range s.paused {
		if !now.Before(until) {
			cl.ResumeFetchPartitions(map[string][]int32{k.topic: {k.part}})
			delete(s.paused, k)
		}
	}
}

func (s *stage) drain() {
	for {
		select {
		case r := <-s.results:
			s.add(r)
		default:
			return
		}
	}
}

// begin opens the stage's transaction if none is open. Records are produced
// into it as soon as their deliveries finish, so ending it only flushes the
// last few: the poll loop is never held long by one partner's retries.
func (s *stage) begin() error {
	if s.inTxn {
		return nil
	}
	if err := s.sess.Begin(); err != nil {
		return fmt.Errorf("webhooks stage %s: begin transaction: %w", s.label, err)
	}
	s.inTxn = true
	return nil
}

// add records a finished delivery of a record. A record's outputs (attempt
// logs, retry or DLQ records) are produced into the open transaction only
// once every record before it in its partition is finished too, that is
// when the watermark the transaction commits passes it: a record's moves
// and its offset commit are then always in the same transaction (exactly
// once), and with FIFO lanes that is almost always at once.
func (s *stage) add(r *result) {
	if r.gen != s.gen.Load() {
		return
	}
	t := s.trackers[r.key]
	if t == nil {
		return
	}
	t.outs[r.offset] = append(t.outs[r.offset], r.recs...)
	if t.pending[r.offset]--; t.pending[r.offset] <= 0 {
		delete(t.pending, r.offset)
	}
	for len(t.queue) > 0 {
		off := t.queue[0]
		if _, open := t.pending[off]; open {
			break
		}
		for _, rec := range t.outs[off] {
			s.produced++
			s.sess.Produce(s.httpCtx, rec, func(_ *kgo.Record, err error) {
				if err != nil {
					s.produceErr.Store(&err)
				}
			})
		}
		delete(t.outs, off)
		t.queue = t.queue[1:]
		s.outstanding--
	}
}

func (s *stage) watermarks() map[partKey]int64 {
	wm := make(map[partKey]int64, len(s.trackers))
	for k, t := range s.trackers {
		wm[k] = t.watermark()
	}
	return wm
}

func (s *stage) changed(wm map[partKey]int64) bool {
	for k, o := range wm {
		if last, ok := s.lastWM[k]; !ok || last != o {
			return true
		}
	}
	return false
}

// commit ends the open transaction, which holds the outputs of every record
// below the watermarks, committing the watermarks with them. An aborted transaction (a rebalance) resets the stage: the
// session rewinds to the committed offsets and everything unfinished is
// polled again.
func (s *stage) commit(sess *kgo.GroupTransactSession, force bool) error {
	if !force && time.Since(s.lastCommit) < commitInterval {
		return nil
	}
	wm := s.watermarks()
	if s.produced == 0 && !s.changed(wm) {
		return nil
	}
	s.lastCommit = time.Now()
	ectx, cancel := context.WithTimeout(s.httpCtx, 60*time.Second)
	defer cancel()
	ectx = kgo.PreTxnCommitFnContext(ectx, s.rewrite(wm))
	committed, err := sess.End(ectx, kgo.TryCommit)
	s.inTxn, s.produced = false, 0
	if err != nil {
		return fmt.Errorf("webhooks stage %s: end transaction: %w", s.label, err)
	}
	if pe := s.produceErr.Swap(nil); pe != nil {
		s.log.Warn("produce failed in transaction", "err", *pe, "committed", committed)
		committed = false
	}
	if !committed {
		s.log.Info("transaction aborted (rebalance or produce failure); re-polling unfinished records")
		s.reset(sess.Client())
		return nil
	}
	s.lastWM = wm
	return nil
}

// rewrite makes the transaction commit the watermarks rather than the
// polled positions.
func (s *stage) rewrite(wm map[partKey]int64) func(*kmsg.TxnOffsetCommitRequest) error {
	return func(req *kmsg.TxnOffsetCommitRequest) error {
		for _, t := range req.Topics {
			if t.TopicID != [16]byte{} {
				s.topicIDs[t.Topic] = t.TopicID
			}
		}
		byTopic := map[string][]kmsg.TxnOffsetCommitRequestTopicPartition{}
		for k, off := range wm {
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition = k.part
			rp.Offset = off
			rp.LeaderEpoch = -1
			rp.Metadata = &req.MemberID
			byTopic[k.topic] = append(byTopic[k.topic], rp)
		}
		req.Topics = req.Topics[:0]
		for topic, parts := range byTopic {
			rt := kmsg.NewTxnOffsetCommitRequestTopic()
			rt.Topic = topic
			rt.TopicID = s.topicIDs[topic]
			rt.Partitions = parts
			req.Topics = append(req.Topics, rt)
		}
		return nil
	}
}

// stopTimers drops the deliveries waiting until due: they are polled again.
func (s *stage) stopTimers() {
	s.timersMu.Lock()
	defer s.timersMu.Unlock()
	for tm := range s.timers {
		tm.Stop()
	}
	clear(s.timers)
}

func (s *stage) reset(cl *kgo.Client) {
	s.gen.Add(1)
	s.stopTimers()
	s.trackers = map[partKey]*tracker{}
	s.outstanding = 0
	s.lastWM = map[partKey]int64{}
	for k := range s.paused {
		cl.ResumeFetchPartitions(map[string][]int32{k.topic: {k.part}})
	}
	s.paused = map[partKey]time.Time{}
	clear(s.lastDue)
}

// retryJob decodes a retry record into its next attempt, or dead-letters it
// when its tenant or endpoint can no longer take it.
func (p *Processor) retryJob(ctx context.Context, r *kgo.Record) (*job, []*kgo.Record) {
	var t Task
	if err := json.Unmarshal(r.Value, &t); err != nil || t.DeliveryID == "" {
		return nil, []*kgo.Record{p.malformed(ctx, r, "malformed retry record", nil)}
	}
	rctx := kafka.Extract(ctx, r)
	reason := ""
	ten, ok := p.tenants.Get(t.TenantID)
	var ep schemas.Endpoint
	switch {
	case !ok:
		reason = "tenant removed"
	case ten.Status != schemas.StatusActive:
		reason = "tenant not active: " + ten.Status
	default:
		found := false
		for _, e := range ten.Endpoints {
			if e.ID == t.EndpointID {
				ep, found = e, true
			}
		}
		switch {
		case !found:
			reason = "endpoint removed"
		case ep.Disabled:
			reason = "endpoint disabled: " + ep.DisabledReason
		}
	}
	if reason != "" {
		if dl := p.deadLetter(rctx, t, reason, strconv.Itoa(t.Stage)); dl != nil {
			return nil, []*kgo.Record{dl}
		}
		return nil, nil
	}
	return &job{tenant: ten, endpoint: ep, task: t, parent: rctx}, nil
}
