package attribution

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fastjson"
	"golang.org/x/sync/errgroup"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
)

// pos is the Kafka position of the record a row comes from.
type pos struct {
	topic     string
	partition int32
	offset    int64
}

func posOf(r *kgo.Record) pos { return pos{r.Topic, r.Partition, r.Offset} }

// touch is a validated touchpoint (times in whole UTC seconds, as stored).
type touch struct {
	schemas.Touchpoint
	pos pos
}

// conv is a validated conversion with its amount in the base currency.
type conv struct {
	ID, UserID, Kind, RefundOf string
	Amount                     decimal.Decimal
	Currency                   string
	AmountBase                 decimal.Decimal
	NewCustomer                bool
	At                         time.Time
	pos                        pos
}

type cost struct {
	schemas.Cost
	AmountBase decimal.Decimal
	pos        pos
}

type dead struct {
	rec    *kgo.Record
	reason string
	code   string // schemas.DeadLetter.ReasonCode
}

// Reason codes of attribution dead letters (schemas/json/dead-letter.v1).
const (
	codeMalformed  = "malformed_record"  // not JSON, not the schema, or a rule of the processor
	codeOversized  = "oversized_record"  // larger than partner.attribution.max_record_bytes
	codeUnwritable = "unwritable_record" // ClickHouse refuses its data
)

// batch is one polled batch, decoded.
type batch struct {
	touches []touch
	convs   []conv
	costs   []cost
	dead    []dead
	splits  []*split // the attributions the batch writes (their rows, in order)
	nattrs  int      // rows of splits
	rollup  rollup
	ends    map[tp]int64 // source partition → end offset after this batch
}

// tp is a source partition.
type tp struct {
	topic     string
	partition int32
}

// attrRow is one row of the attributions table.
type attrRow struct {
	ID, ConversionID, UserID, PartnerID, Model, Kind string
	Version                                          uint64
	Credit, Revenue, NewCustomer                     decimal.Decimal
	At                                               time.Time
}

// AttributionID is the deterministic id of the attribution of a conversion
// to a partner under a model.
func AttributionID(conversionID, model, partnerID string) string {
	var buf [192]byte // ids of any length: append grows past it
	b := append(append(append(append(append(buf[:0], conversionID...), 0), model...), 0), partnerID...)
	h := sha256.Sum256(b)
	var out [32]byte
	hex.Encode(out[:], h[:16])
	return string(out[:])
}

// Handle attributes and stores one batch: it returns nil only when every
// record is durable in ClickHouse or in the dead-letter topic. It is
// idempotent, and exactly once for the rollup:
//
//  1. records below their partition's committed end offset (the ingest
//     ledger) are already counted and are skipped;
//  2. the rest is decoded; a record whose id the committed history already
//     holds (a duplicate, a replay at another offset) changes nothing;
//  3. the raw rows of the new records are inserted (at least once: a replay
//     writes identical rows, readers de-duplicate by id), dead letters are
//     produced;
//  4. one rollup INSERT carries every correction of the batch and the
//     ledger's new end offsets of its partitions — the commit point. Only
//     after it landed are the histories in the cache replaced.
//
// An error leaves the cache as it was; after an error in step 4 the outcome
// is unknown, and the next call reloads the ledger (waiting for the insert
// to finish on the server) before it decides anything.
//
// Batches of the same partition number never run at once in one process:
// after a lost session the old owner of a partition can still be in its
// batch when the new owner (another worker) polls it again, and both would
// count the same records from the same ledger end. The later one waits and
// then finds them counted.
func (p *Processor) Handle(ctx context.Context, recs []*kgo.Record) error {
	unlock := p.owners.lock(recs)
	defer unlock()
	err := p.handle(ctx, recs)
	if err == nil || !permanent(err) {
		return err
	}
	return p.isolate(ctx, recs, err)
}

func (p *Processor) handle(ctx context.Context, recs []*kgo.Record) error {
	if err := p.led.ready(ctx); err != nil {
		return err
	}
	ends := map[tp]int64{}
	fresh := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		if r.Offset < p.led.end(r.Topic, r.Partition) {
			p.m.records.WithLabelValues(r.Topic, "replayed").Inc()
			continue
		}
		k := tp{r.Topic, r.Partition}
		ends[k] = max(ends[k], r.Offset+1)
		fresh = append(fresh, r)
	}
	if len(ends) == 0 {
		return nil
	}
	all := batch{rollup: rollup{}, ends: ends}
	var fp fastjson.Parser
	for _, r := range fresh {
		p.decode(&fp, r, &all)
	}
	// One history read for the whole batch (two queries, or a few per
	// kind for a batch of many users), beside the cost lookup.
	users := map[string]bool{}
	for _, t := range all.touches {
		users[t.UserID] = true
	}
	for _, c := range all.convs {
		users[c.UserID] = true
	}
	var hs map[string]*history
	var known map[string]bool
	var g errgroup.Group
	g.Go(func() (err error) { hs, err = p.histories(ctx, sortedKeys(users)); return err })
	g.Go(func() (err error) { known, err = p.knownCosts(ctx, all.costs); return err })
	if err := g.Wait(); err != nil {
		return err
	}
	next, err := p.apply(&all, hs, known)
	if err != nil {
		return err
	}
	// The raw rows and the dead letters, together: both must be durable
	// before the rollup INSERT commits the batch.
	g = errgroup.Group{}
	g.Go(func() error { return p.insertRaw(ctx, &all) })
	g.Go(func() error { return p.deadLetter(ctx, all.dead) })
	if err := g.Wait(); err != nil {
		return err
	}
	params := p.led.needsParams()
	ids := p.led.missingTopicIDs(p.topicIDs, all.ends)
	err = p.insertRollup(ctx, &all, params, ids)
	if err == nil && p.faults.afterRollup != nil {
		err = p.faults.afterRollup()
	}
	if err != nil {
		// The insert may have landed or not: find out before the next batch.
		p.led.invalidate()
		p.hist.Purge()
		return err
	}
	p.led.advance(all.ends, params, ids)
	for u, h := range next {
		p.hist.Add(u, h)
	}
	for _, c := range all.costs {
		p.costIDs.Add(c.ID, struct{}{})
	}
	for _, d := range all.dead {
		p.poison.done(posOf(d.rec))
	}
	return nil
}

// insertRaw writes a batch's raw rows (after the fault seam, in tests).
func (p *Processor) insertRaw(ctx context.Context, b *batch) error {
	if p.faults.insert != nil {
		if err := p.faults.insert(idsOf(b.touches, func(t touch) string { return t.ID }), idsOf(b.convs, func(c conv) string { return c.ID })); err != nil {
			return err
		}
	}
	return p.insert(ctx, b)
}

func idsOf[T any](xs []T, id func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = id(x)
	}
	return out
}

// apply drops the batch's duplicates (ids the committed histories already
// hold, or seen earlier in the batch), computes the new histories and
// attribution rows, and the rollup's corrections from the old histories to
// the new ones. hs is not changed: next holds the new histories, to be
// cached once the batch is committed.
func (p *Processor) apply(b *batch, hs map[string]*history, knownCosts map[string]bool) (next map[string]*history, err error) {
	next = map[string]*history{}
	nh := func(u string) *history {
		h := next[u]
		if h == nil {
			h = hs[u].clone()
			next[u] = h
		}
		return h
	}
	leadPartners := map[string]map[string]bool{}        // user → partners with a new touch
	customerPairs := map[string]map[modelPartner]bool{} // user → (model, partner) whose credit changed
	touches := b.touches[:0]
	for _, t := range b.touches {
		if _, dup := hs[t.UserID].touches[t.ID]; dup {
			p.m.records.WithLabelValues(t.pos.topic, "duplicate").Inc()
			continue
		}
		h := nh(t.UserID)
		if _, dup := h.touches[t.ID]; dup {
			p.m.records.WithLabelValues(t.pos.topic, "duplicate").Inc()
			continue
		}
		h.touches[t.ID] = models.Touch{ID: t.ID, PartnerID: t.PartnerID, At: t.OccurredAt}
		touches = append(touches, t)
		if leadPartners[t.UserID] == nil {
			leadPartners[t.UserID] = map[string]bool{}
		}
		leadPartners[t.UserID][t.PartnerID] = true
	}
	b.touches = touches
	convs := b.convs[:0]
	for _, c := range b.convs {
		if _, dup := hs[c.UserID].convs[c.ID]; dup {
			p.m.records.WithLabelValues(c.pos.topic, "duplicate").Inc()
			continue
		}
		h := nh(c.UserID)
		if _, dup := h.convs[c.ID]; dup {
			p.m.records.WithLabelValues(c.pos.topic, "duplicate").Inc()
			continue
		}
		h.convs[c.ID] = c
		convs = append(convs, c)
	}
	b.convs = convs
	costs := b.costs[:0]
	seen := map[string]bool{}
	for _, c := range b.costs {
		if knownCosts[c.ID] || seen[c.ID] {
			p.m.records.WithLabelValues(c.pos.topic, "duplicate").Inc()
			continue
		}
		seen[c.ID] = true
		costs = append(costs, c)
		b.rollup.addCost(c)
	}
	b.costs = costs

	// Conversions whose attribution the batch may change: its own, the
	// refunds of those, and the user's conversions inside the lookback
	// window after each new touchpoint (late and out-of-order touchpoints
	// re-attribute, with a larger version).
	type key struct{ user, id string }
	targets := map[key]bool{}
	for _, c := range b.convs {
		targets[key{c.UserID, c.ID}] = true
		if c.Kind != schemas.ConversionRefund {
			for _, r := range next[c.UserID].convs {
				if r.RefundOf == c.ID {
					targets[key{c.UserID, r.ID}] = true
				}
			}
		}
	}
	for _, t := range b.touches {
		h := next[t.UserID]
		until := t.OccurredAt.Add(p.params.Lookback)
		for _, c := range h.convs {
			at, ok := h.anchor(c)
			if ok && !at.Before(t.OccurredAt) && !at.After(until) {
				targets[key{t.UserID, c.ID}] = true
			}
		}
	}
	keys := make([]key, 0, len(targets))
	for k := range targets {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].user != keys[j].user {
			return keys[i].user < keys[j].user
		}
		return keys[i].id < keys[j].id
	})
	for _, k := range keys {
		h := next[k.user]
		s, err := p.attribute(h, h.convs[k.id])
		if err != nil {
			return nil, err
		}
		if s == nil {
			if c := h.convs[k.id]; c.Kind == schemas.ConversionRefund {
				if _, ok := h.anchor(c); !ok {
					p.m.pending.Inc()
				}
			}
			continue
		}
		old := hs[k.user].attrs[k.id]
		s = keepPartners(old, s)
		h.attrs[k.id] = s
		b.splits = append(b.splits, s)
		b.nattrs += len(s.rows)
		b.rollup.addSplit(old, s)
		if pairs := customerChanges(old, s); len(pairs) > 0 {
			if customerPairs[k.user] == nil {
				customerPairs[k.user] = map[modelPartner]bool{}
			}
			for _, mp := range pairs {
				customerPairs[k.user][mp] = true
			}
		}
	}
	var sc scratch
	for u, h := range next {
		b.rollup.addLeads(&sc, hs[u], h, leadPartners[u])
		b.rollup.addCustomers(&sc, hs[u], h, customerPairs[u])
	}
	return next, nil
}

// customerChanges lists the (model, partner) pairs for which a conversion's
// new attribution makes its user a customer where the old did not, or the
// reverse.
func customerChanges(old, cur *split) []modelPartner {
	was := map[modelPartner]bool{}
	if old != nil {
		for i := range old.rows {
			if a := &old.rows[i]; customer(a) {
				was[modelPartner{a.Model, a.PartnerID}] = true
			}
		}
	}
	var out []modelPartner
	for i := range cur.rows {
		a := &cur.rows[i]
		mp := modelPartner{a.Model, a.PartnerID}
		if customer(a) != was[mp] {
			out = append(out, mp)
		}
		delete(was, mp)
	}
	for mp := range was {
		out = append(out, mp)
	}
	return out
}

// keepPartners adds a zero row for every (model, partner) of old that cur
// lacks. It never happens while touches are only added (the eligible set
// only grows); if it did, the zero row keeps the raw table (latest version
// per id) and the rollup (corrections) in step.
func keepPartners(old, cur *split) *split {
	if old == nil {
		return cur
	}
	have := make(map[modelPartner]bool, len(cur.rows))
	for _, a := range cur.rows {
		have[modelPartner{a.Model, a.PartnerID}] = true
	}
	var extra []attrRow
	for _, a := range old.rows {
		if !have[modelPartner{a.Model, a.PartnerID}] {
			a.Version = cur.version
			a.Credit, a.Revenue, a.NewCustomer = decimal.Zero, decimal.Zero, decimal.Zero
			extra = append(extra, a)
		}
	}
	if len(extra) == 0 {
		return cur
	}
	return &split{version: cur.version, rows: append(append([]attrRow(nil), cur.rows...), extra...)}
}

var one = decimal.NewFromInt(1)

// attribute returns the attribution of one conversion under every model, or
// nil when no partner touched the user in the window (or a refund's
// conversion is not known yet: it is credited when that conversion
// arrives).
//
// A refund reverses revenue (−|amount|) and conversion credit (−share) with
// the refunded conversion's split; it never changes new customers or
// customers: acquiring the customer happened, and the refund's own
// new_customer flag, if a producer sets one, is ignored.
func (p *Processor) attribute(h *history, c conv) (*split, error) {
	at, ok := h.anchor(c)
	if !ok {
		return nil, nil
	}
	el := models.Eligible(h.touchList(), at, p.params.Lookback)
	if len(el) == 0 {
		return nil, nil
	}
	refund := c.Kind == schemas.ConversionRefund
	revenue, credit := c.AmountBase, one
	if refund {
		revenue, credit = c.AmountBase.Abs().Neg(), one.Neg()
	}
	s := &split{version: uint64(len(el)), rows: make([]attrRow, 0, len(models.All)*distinctPartners(el))}
	for _, m := range models.All {
		ws, err := models.Weights(m, el, at, p.params)
		if err != nil {
			return nil, err
		}
		rev := models.Split(revenue, ws, 2)
		cr := models.Split(credit, ws, 4)
		for i, w := range ws {
			nc := decimal.Zero
			if c.NewCustomer && !refund {
				nc = cr[i]
			}
			s.rows = append(s.rows, attrRow{
				ID: AttributionID(c.ID, m, w.PartnerID), ConversionID: c.ID, UserID: c.UserID,
				PartnerID: w.PartnerID, Model: m, Kind: c.Kind, Version: s.version,
				Credit: cr[i], Revenue: rev[i], NewCustomer: nc, At: c.At,
			})
		}
	}
	return s, nil
}

// distinctPartners counts the partners of touches (a split has a row per
// model and partner).
func distinctPartners(ts []models.Touch) int {
	if len(ts) > 8 {
		seen := make(map[string]bool, 8)
		for _, t := range ts {
			seen[t.PartnerID] = true
		}
		return len(seen)
	}
	n := 0
	for i, t := range ts {
		if !slices.ContainsFunc(ts[:i], func(u models.Touch) bool { return u.PartnerID == t.PartnerID }) {
			n++
		}
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
