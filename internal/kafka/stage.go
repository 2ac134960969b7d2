package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TxnStage is a consume-transform-produce loop with exactly-once moves
// between topics and pipelined, out-of-order work.
//
// Polled records are handed to a TxnHandler that may finish them later and
// in any order (each record's work has one or more parts, finished from any
// goroutine), so one slow record never holds back the work of records polled
// after it. The stage keeps a Kafka transaction open and, per partition,
// commits offsets up to the lowest record not finished yet (the watermark),
// in the same transaction that produces the outputs of the finished records
// below it: a record's outputs are produced only once the watermark passes
// it, so a record's moves and its offset commit always land together. A
// crash repeats at most the unfinished window (MaxOutstanding records),
// never loses a record, and never produces an output twice.
//
// A handler may ask for a partition to be paused until a time (a topic of
// delayed records whose head is not due yet): the stage pauses fetching it
// (PauseFetchPartitions) without holding back other partitions.
//
// A rebalance or a failed produce aborts the open transaction; the stage
// then starts a new generation: the tickets of the old one are cancelled,
// their late completions ignored, and everything not committed is polled
// again.
type TxnStage struct {
	opt TxnStageOptions
	h   TxnHandler
	log *slog.Logger

	gen             atomic.Uint64
	parts           atomic.Int64 // unfinished parts of the current generation
	results         chan *completion
	done            chan struct{}
	produceErr      atomic.Pointer[error]
	sessionRestarts atomic.Int64
	outcomes        outcomes // how this incarnation's transactions ended (the sweep reads it)

	// owned by the loop goroutine
	sess        *kgo.GroupTransactSession
	genCtx      context.Context
	cancelGen   context.CancelFunc
	runCtx      context.Context
	outCtx      context.Context // produces run under it; outlives shutdown's intake cancel
	trackers    map[partKey]*tracker
	outstanding int // records accepted and not committed: the in-flight window
	finished    int // of those, finished and produced, waiting for the commit
	paused      map[partKey]time.Time
	lastWM      map[partKey]int64
	topicIDs    map[string][16]byte
	lastCommit  time.Time
	pollAt      time.Time // when the records being accepted were polled
	oldest      time.Time // poll time of the oldest record accepted and not committed (zero: none)
	inTxn       bool
	produced    int
}

// TxnStageOptions configure a TxnStage.
type TxnStageOptions struct {
	// Name names the stage in logs and errors.
	Name string
	// Client are the base client options (Options: brokers, logging,
	// tracing). The stage adds the group, topics, transactional id and
	// read-committed fetching.
	Client []kgo.Opt
	// Group is the consumer group; Topics the topics it consumes.
	Group  string
	Topics []string
	// Outputs are the topics the handler produces to. At start the stage
	// closes the transactions of its producer that Kafka left open on
	// them, on Topics and on its group's offsets (see orphans.go).
	Outputs []string
	// TransactionalID must be stable per instance across restarts (so a
	// restarted instance fences its predecessor's open transaction at once)
	// and unique among running instances. It is also the stage's static
	// group membership (group.instance.id): an instance restarted within
	// the session timeout takes its predecessor's partitions back at once,
	// without a rebalance; a stage that stops leaves the group, so its
	// partitions move to the other instances at once.
	TransactionalID string
	// MaxOutstanding bounds the records accepted but not committed (0:
	// 256): memory, how far a slow record can hold back its partition's
	// commit, and exactly what a crash can repeat.
	MaxOutstanding int
	// CommitInterval is the shortest time between transaction commits
	// (0: 50 ms).
	CommitInterval time.Duration
	// MaxPause caps a pause a handler asks for (0: no cap).
	MaxPause time.Duration
	// DrainTimeout bounds how long Run waits at shutdown for parts already
	// started (0: 10 s).
	DrainTimeout time.Duration
	// OnNewSession, if set, is called after a failed Kafka session, before
	// Run starts the next one (a metric).
	OnNewSession func(err error)
	// OrphanSweep is how often a running stage looks for transactions it
	// ended that Kafka still holds open on a partition (0: 10 s; see
	// sweepOrphans).
	OrphanSweep time.Duration
	// Log is the stage's logger.
	Log *slog.Logger
}

// TxnHandler does a stage's work.
type TxnHandler interface {
	// Accept is called on the stage's loop goroutine for every polled
	// record, in offset order per partition. It must not block.
	Accept(r *kgo.Record, t *Ticket) Accepted
}

// TxnHandlerFunc adapts a function to TxnHandler.
type TxnHandlerFunc func(r *kgo.Record, t *Ticket) Accepted

// Accept calls f.
func (f TxnHandlerFunc) Accept(r *kgo.Record, t *Ticket) Accepted { return f(r, t) }

// Accepted is what a handler does with a record.
type Accepted struct {
	// Parts is the number of parts of the record's work still running.
	// Each ends with exactly one call of Ticket.Done (finished, with its
	// outputs) or Ticket.Drop (abandoned because the ticket's context
	// ended). 0: the record is finished with Out.
	Parts int
	// Out are outputs produced in the transaction that commits the
	// record's offset, with the parts' outputs.
	Out []*kgo.Record
	// PauseUntil, if later than now, pauses fetching the record's
	// partition until then (capped by MaxPause).
	PauseUntil time.Time
}

// Ticket tracks one accepted record's parts.
type Ticket struct {
	s   *TxnStage
	gen uint64
	key partKey
	off int64
	ctx context.Context
}

// Context is cancelled when the stage stops taking work (shutdown) or drops
// the ticket's generation (rebalance, aborted transaction): work not started
// by then should be dropped, not started.
func (t *Ticket) Context() context.Context { return t.ctx }

// Done finishes one part with its outputs. It may be called from any
// goroutine; a Done of a dropped generation is ignored.
func (t *Ticket) Done(out ...*kgo.Record) {
	t.s.finish(&completion{gen: t.gen, key: t.key, offset: t.off, recs: out})
}

// Add adds n parts to the record's work; call it before the Done of a part
// that is still open (a part that spawns others), from the same goroutine,
// so the record cannot finish in between.
func (t *Ticket) Add(n int) {
	if n > 0 {
		t.s.finish(&completion{gen: t.gen, key: t.key, offset: t.off, grow: n})
	}
}

// Drop abandons one part: the record stays unfinished and is polled again
// by the next generation or process. Call it only once Context is done.
func (t *Ticket) Drop() {
	t.s.finish(&completion{gen: t.gen, key: t.key, offset: t.off, dropped: true})
}

type partKey struct {
	topic string
	part  int32
}

// tracker follows one partition's unfinished records in offset order.
type tracker struct {
	queue   []int64
	queueAt []time.Time             // poll time of each queued record
	pending map[int64]int           // parts not finished, per offset
	dropped map[int64]bool          // offsets with an abandoned part
	outs    map[int64][]*kgo.Record // outputs of finished parts, held until the offset is committable
	head    int64                   // next offset after the last polled record
}

func (t *tracker) watermark() int64 {
	if len(t.queue) > 0 {
		return t.queue[0]
	}
	return t.head
}

type completion struct {
	gen     uint64
	key     partKey
	offset  int64
	recs    []*kgo.Record
	dropped bool
	grow    int // Add: more parts, not a completion
}

const pollWait = 100 * time.Millisecond

// NewTxnStage returns a stage; Run starts it.
func NewTxnStage(opt TxnStageOptions, h TxnHandler) *TxnStage {
	if opt.MaxOutstanding <= 0 {
		opt.MaxOutstanding = 256
	}
	if opt.CommitInterval <= 0 {
		opt.CommitInterval = 50 * time.Millisecond
	}
	if opt.DrainTimeout <= 0 {
		opt.DrainTimeout = 10 * time.Second
	}
	if opt.OrphanSweep <= 0 {
		opt.OrphanSweep = 10 * time.Second
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	return &TxnStage{opt: opt, h: h, log: opt.Log,
		results: make(chan *completion, 4096), done: make(chan struct{}),
		trackers: map[partKey]*tracker{}, paused: map[partKey]time.Time{},
		lastWM: map[partKey]int64{}, topicIDs: map[string][16]byte{}}
}

func (s *TxnStage) finish(c *completion) {
	select {
	case s.results <- c:
	case <-s.done:
	}
}

// Run consumes until ctx ends. At shutdown it stops taking work, waits up
// to DrainTimeout for started parts, and commits what finished.
//
// A Kafka session that fails (a transaction that cannot be ended while the
// brokers are down or restarting) is closed and a new one started, after a
// backoff: the failed session's transaction is aborted (the new producer's
// InitProducerId fences it), the work it had not committed is dropped and
// polled again from the committed offsets, as after a restart of the
// process. Run returns an error only for what a new session cannot fix: a
// configuration Kafka refuses, a producer fenced by another instance with
// the same transactional id, a refused authorization.
func (s *TxnStage) Run(ctx context.Context) error {
	defer close(s.done)
	backoff := time.Second
	for {
		started := time.Now()
		err := s.session(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if fatal(err) {
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		s.log.Warn("the stage's Kafka session failed; its transaction is aborted and a new session polls the unfinished records again",
			"err", err, "backoff", backoff, "uncommitted_since", s.oldest, "uncommitted_records", s.outstanding)
		s.sessionRestarts.Add(1)
		if s.opt.OnNewSession != nil {
			s.opt.OnNewSession(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// SessionRestarts is how many times Run started a new Kafka session after
// one failed.
func (s *TxnStage) SessionRestarts() int64 { return s.sessionRestarts.Load() }

// instanceID is id as a group.instance.id: Kafka accepts up to 249 of
// [a-zA-Z0-9._-].
func instanceID(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b[:min(len(b), 249)])
}

// leave removes the stage's static member from its group at shutdown (a
// static member's client does not leave when it closes), so that its
// partitions move to the other instances now rather than after the session
// timeout. A restart that comes back within the timeout is a crash's case,
// which does not get here.
func (s *TxnStage) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(s.opt.Client...)
	if err == nil {
		defer cl.Close()
		var resp kadm.LeaveGroupResponses
		resp, err = kadm.NewClient(cl).LeaveGroup(ctx, kadm.LeaveGroup(s.opt.Group).InstanceIDs(instanceID(s.opt.TransactionalID)).Reason("shutdown"))
		if err == nil {
			err = resp.Error()
		}
	}
	if err != nil && !errors.Is(err, kerr.UnknownMemberID) {
		s.log.Warn("could not leave the consumer group at shutdown; its partitions move to the other instances after the session timeout",
			"group", s.opt.Group, "err", err)
	}
}

// fatalError is a failure a new session cannot fix.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// fatal is whether a new Kafka session cannot fix err.
func fatal(err error) bool {
	var fe fatalError
	if errors.As(err, &fe) {
		return true
	}
	switch {
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch), errors.Is(err, kerr.FencedInstanceID),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return true
	}
	return false
}

// session runs one Kafka session (a GroupTransactSession) until ctx ends
// (nil) or the session fails.
func (s *TxnStage) session(ctx context.Context) error {
	opts := append(append([]kgo.Opt{}, s.opt.Client...),
		kgo.ConsumerGroup(s.opt.Group),
		kgo.ConsumeTopics(s.opt.Topics...),
		kgo.TransactionalID(s.opt.TransactionalID),
		kgo.TransactionTimeout(20*time.Second),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(10*time.Second),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.InstanceID(instanceID(s.opt.TransactionalID)),
	)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fatalError{fmt.Errorf("stage %s: %w", s.opt.Name, err)}
	}
	outCtx, cancelOut := context.WithCancel(context.WithoutCancel(ctx))
	s.outCtx, s.runCtx = outCtx, ctx
	// A new generation on a new client: completions of a failed session's
	// tickets are ignored, and everything starts from the committed offsets.
	s.newGeneration()
	s.paused = map[partKey]time.Time{}
	s.produced, s.inTxn = 0, false
	s.produceErr.Store(nil)
	defer func() {
		s.cancelGen()
		cancelOut()
		sess.Close() // a static member: no LeaveGroup
		if ctx.Err() != nil {
			s.leave()
		}
	}()
	s.sess = sess
	initProducer := func(ctx context.Context) (int64, error) {
		pid, _, err := sess.Client().ProducerID(ctx)
		return pid, err
	}
	adm := kadm.NewClient(sess.Client())
	if err := s.recover(ctx, adm, initProducer); err != nil {
		return fatalError{err}
	}
	sweepCtx, stopSweep := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() { defer close(swept); s.sweepOrphans(sweepCtx, adm) }()
	defer func() { stopSweep(); <-swept }()
	for ctx.Err() == nil {
		if err := s.begin(); err != nil {
			return err
		}
		s.resumeDue(sess.Client())
		if room := s.opt.MaxOutstanding - s.outstanding; room > 0 {
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
					s.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
				}
			})
			s.pollAt = time.Now()
			fs.EachRecord(s.accept)
		} else {
			select {
			case c := <-s.results:
				s.add(c)
			case <-time.After(pollWait):
			case <-ctx.Done():
			}
		}
		s.drain()
		if err := s.commit(false); err != nil {
			return err
		}
	}
	// Shutdown: tickets' contexts are cancelled with ctx, so nothing new
	// starts; let started parts finish, commit what finished.
	if err := s.begin(); err != nil {
		return err
	}
	deadline := time.Now().Add(s.opt.DrainTimeout)
	for s.parts.Load() > 0 && time.Now().Before(deadline) {
		select {
		case c := <-s.results:
			s.add(c)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.drain()
	if err := s.commit(true); err != nil {
		s.log.Warn("final commit failed; unfinished records will be handled again", "err", err)
	}
	return nil
}

// accept registers a polled record and hands it to the handler.
func (s *TxnStage) accept(r *kgo.Record) {
	k := partKey{r.Topic, r.Partition}
	tr := s.trackers[k]
	if tr == nil {
		tr = &tracker{pending: map[int64]int{}, dropped: map[int64]bool{}, outs: map[int64][]*kgo.Record{}}
		s.trackers[k] = tr
	}
	tr.head = r.Offset + 1
	gen := s.gen.Load()
	t := &Ticket{s: s, gen: gen, key: k, off: r.Offset, ctx: s.genCtx}
	a := s.h.Accept(r, t)
	if until := a.PauseUntil; time.Until(until) > 5*time.Millisecond {
		if limit := time.Now().Add(s.opt.MaxPause); s.opt.MaxPause > 0 && until.After(limit) {
			until = limit
		}
		if _, ok := s.paused[k]; !ok {
			s.sess.Client().PauseFetchPartitions(map[string][]int32{k.topic: {k.part}})
		}
		if until.After(s.paused[k]) {
			s.paused[k] = until
		}
	}
	if a.Parts <= 0 && len(a.Out) == 0 {
		return
	}
	tr.queue = append(tr.queue, r.Offset)
	tr.queueAt = append(tr.queueAt, s.pollAt)
	if s.oldest.IsZero() {
		s.oldest = s.pollAt
	}
	s.outstanding++
	if len(a.Out) > 0 {
		tr.outs[r.Offset] = a.Out
	}
	if a.Parts > 0 {
		tr.pending[r.Offset] = a.Parts
		s.parts.Add(int64(a.Parts))
	}
	s.advance(tr)
}

func (s *TxnStage) resumeDue(cl *kgo.Client) {
	now := time.Now()
	for k, until := range s.paused {
		if !now.Before(until) {
			cl.ResumeFetchPartitions(map[string][]int32{k.topic: {k.part}})
			delete(s.paused, k)
		}
	}
}

func (s *TxnStage) drain() {
	for {
		select {
		case c := <-s.results:
			s.add(c)
		default:
			return
		}
	}
}

// begin opens the stage's transaction if none is open. Outputs are produced
// into it as soon as the watermark passes their record, so ending it only
// flushes the last few.
func (s *TxnStage) begin() error {
	if s.inTxn {
		return nil
	}
	if err := s.sess.Begin(); err != nil {
		return fmt.Errorf("stage %s: begin transaction: %w", s.opt.Name, err)
	}
	s.inTxn = true
	return nil
}

// add records a finished (or dropped) part and produces the outputs of the
// records the watermark passes.
func (s *TxnStage) add(c *completion) {
	if c.gen != s.gen.Load() {
		return
	}
	t := s.trackers[c.key]
	if c.grow > 0 {
		s.parts.Add(int64(c.grow))
		if t != nil {
			t.pending[c.offset] += c.grow
		}
		return
	}
	s.parts.Add(-1)
	if t == nil {
		return
	}
	if c.dropped {
		t.dropped[c.offset] = true
	} else {
		t.outs[c.offset] = append(t.outs[c.offset], c.recs...)
	}
	if t.pending[c.offset]--; t.pending[c.offset] <= 0 && !t.dropped[c.offset] {
		delete(t.pending, c.offset)
	}
	s.advance(t)
}

// advance produces the outputs of the records at the head of t that are
// finished, moving the watermark past them.
func (s *TxnStage) advance(t *tracker) {
	for len(t.queue) > 0 {
		off := t.queue[0]
		if _, open := t.pending[off]; open {
			break
		}
		gen := s.gen.Load()
		for _, rec := range t.outs[off] {
			s.produced++
			s.sess.Produce(s.outCtx, rec, func(_ *kgo.Record, err error) {
				// A failure of an aborted generation's or a closed
				// session's produce is not the open transaction's.
				if err != nil && s.gen.Load() == gen {
					s.produceErr.Store(&err)
				}
			})
		}
		delete(t.outs, off)
		t.queue, t.queueAt = t.queue[1:], t.queueAt[1:]
		s.finished++
	}
}

func (s *TxnStage) watermarks() map[partKey]int64 {
	wm := make(map[partKey]int64, len(s.trackers))
	for k, t := range s.trackers {
		wm[k] = t.watermark()
	}
	return wm
}

func (s *TxnStage) changed(wm map[partKey]int64) bool {
	for k, o := range wm {
		if last, ok := s.lastWM[k]; !ok || last != o {
			return true
		}
	}
	return false
}

// commit ends the open transaction, which holds the outputs of every record
// below the watermarks, committing the watermarks with them. A transaction
// with a failed produce is aborted, never committed: no output is lost. An
// aborted transaction (a rebalance, a produce failure) starts a new
// generation: the session rewinds to the committed offsets and everything
// unfinished is polled again.
func (s *TxnStage) commit(force bool) error {
	// Commit early when an eighth of the window waits for it: what a crash
	// repeats stays small, and the window refills while the rest is worked.
	if !force && time.Since(s.lastCommit) < s.opt.CommitInterval && s.finished < max(s.opt.MaxOutstanding/8, 1) {
		return nil
	}
	wm := s.watermarks()
	if s.produced == 0 && !s.changed(wm) {
		return nil
	}
	s.lastCommit = time.Now()
	ectx, cancel := context.WithTimeout(s.outCtx, 60*time.Second)
	defer cancel()
	try := kgo.TryCommit
	if err := s.sess.Client().Flush(ectx); err != nil {
		try = kgo.TryAbort
	}
	if pe := s.produceErr.Swap(nil); pe != nil {
		s.log.Error("produce failed in transaction; aborting it, the records are handled again", "err", *pe)
		try = kgo.TryAbort
	}
	ectx = kgo.PreTxnCommitFnContext(ectx, s.rewrite(wm))
	committing := s.finished
	pid, epoch, idErr := s.sess.Client().ProducerID(ectx) // the transaction's: KIP-890 bumps the epoch at its end
	committed, err := s.sess.End(ectx, try)
	s.inTxn, s.produced = false, 0
	if err != nil {
		return fmt.Errorf("stage %s: end transaction: %w", s.opt.Name, err)
	}
	if idErr == nil {
		s.outcomes.record(pid, epoch, committed)
	}
	if !committed {
		// What the next generation redoes: the work of every record polled
		// since uncommitted_since (an HTTP attempt made after it may be made
		// again).
		s.log.Info("transaction aborted (rebalance or produce failure); polling unfinished records again",
			"uncommitted_since", s.oldest, "uncommitted_records", s.outstanding)
		s.reset()
		return nil
	}
	s.lastWM = wm
	s.finished -= committing
	s.outstanding -= committing
	s.oldest = time.Time{}
	for _, t := range s.trackers {
		if len(t.queueAt) > 0 && (s.oldest.IsZero() || t.queueAt[0].Before(s.oldest)) {
			s.oldest = t.queueAt[0]
		}
	}
	return nil
}

// rewrite makes the transaction commit the watermarks rather than the
// polled positions.
func (s *TxnStage) rewrite(wm map[partKey]int64) func(*kmsg.TxnOffsetCommitRequest) error {
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

// newGeneration drops the work of the current generation (its tickets'
// contexts end, their completions are ignored) and starts the next one.
func (s *TxnStage) newGeneration() {
	s.gen.Add(1)
	s.parts.Store(0)
	if s.cancelGen != nil {
		s.cancelGen()
	}
	s.genCtx, s.cancelGen = context.WithCancel(s.runCtx)
	s.trackers = map[partKey]*tracker{}
	s.outstanding, s.finished = 0, 0
	s.oldest = time.Time{}
	s.lastWM = map[partKey]int64{}
}

// reset starts a new generation within the session (an aborted
// transaction), resuming the partitions it had paused.
func (s *TxnStage) reset() {
	s.newGeneration()
	cl := s.sess.Client()
	for k := range s.paused {
		cl.ResumeFetchPartitions(map[string][]int32{k.topic: {k.part}})
	}
	s.paused = map[partKey]time.Time{}
}
