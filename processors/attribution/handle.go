package attribution

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
)

// touch is a validated touchpoint (times in whole UTC seconds, as stored).
type touch struct {
	schemas.Touchpoint
}

// conv is a validated conversion with its amount in the base currency.
type conv struct {
	ID, UserID, Kind, RefundOf string
	Amount                     decimal.Decimal
	Currency                   string
	AmountBase                 decimal.Decimal
	NewCustomer                bool
	At                         time.Time
}

type cost struct {
	schemas.Cost
	AmountBase decimal.Decimal
}

type dead struct {
	rec    *kgo.Record
	reason string
}

// batch is one polled batch, decoded.
type batch struct {
	touches []touch
	convs   []conv
	costs   []cost
	dead    []dead
	attrs   []attrRow
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
	h := sha256.Sum256([]byte(conversionID + "\x00" + model + "\x00" + partnerID))
	return hex.EncodeToString(h[:16])
}

// Handle attributes and stores one batch: it returns nil only when every
// record is durable in ClickHouse or in the dead-letter topic. It is
// idempotent: handling the same records again writes identical rows.
func (p *Processor) Handle(ctx context.Context, recs []*kgo.Record) error {
	var b batch
	for _, r := range recs {
		p.decode(r, &b)
	}
	users := map[string]bool{}
	for _, t := range b.touches {
		users[t.UserID] = true
	}
	for _, c := range b.convs {
		users[c.UserID] = true
	}
	hs, err := p.histories(ctx, users)
	if err != nil {
		return err
	}
	for _, t := range b.touches {
		hs[t.UserID].addTouch(models.Touch{ID: t.ID, PartnerID: t.PartnerID, At: t.OccurredAt})
	}
	for _, c := range b.convs {
		hs[c.UserID].addConv(c)
	}
	if err := p.attributeBatch(&b, hs); err != nil {
		return err
	}
	if err := p.insert(ctx, &b); err != nil {
		return err
	}
	if err := p.deadLetter(ctx, b.dead); err != nil {
		return err
	}
	for _, u := range sortedKeys(users) {
		p.hist.Add(u, hs[u])
	}
	return nil
}

// attributeBatch computes the attribution rows of every conversion whose
// credit the batch may change: its own conversions, the refunds of those
// conversions, and the user's conversions inside the lookback window after
// each touchpoint of the batch (late and out-of-order touchpoints
// re-attribute, with a larger version).
func (p *Processor) attributeBatch(b *batch, hs map[string]*history) error {
	type key struct{ user, id string }
	targets := map[key]bool{}
	for _, c := range b.convs {
		targets[key{c.UserID, c.ID}] = true
		if c.Kind != schemas.ConversionRefund {
			for _, r := range hs[c.UserID].convs {
				if r.RefundOf == c.ID {
					targets[key{c.UserID, r.ID}] = true
				}
			}
		}
	}
	for _, t := range b.touches {
		h := hs[t.UserID]
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
		h := hs[k.user]
		rows, err := p.attribute(h, h.convs[k.id])
		if err != nil {
			return err
		}
		b.attrs = append(b.attrs, rows...)
	}
	return nil
}

var one = decimal.NewFromInt(1)

// attribute returns the rows of one conversion under every model, or none
// when no partner touched the user in the window (or a refund's conversion
// is not known yet: it is credited when that conversion arrives).
func (p *Processor) attribute(h *history, c conv) ([]attrRow, error) {
	at, ok := h.anchor(c)
	if !ok {
		p.m.pending.Inc()
		return nil, nil
	}
	el := models.Eligible(h.touchList(), at, p.params.Lookback)
	if len(el) == 0 {
		return nil, nil
	}
	revenue, credit := c.AmountBase, one
	if c.Kind == schemas.ConversionRefund {
		revenue, credit = c.AmountBase.Abs().Neg(), one.Neg()
	}
	var out []attrRow
	for _, m := range models.All {
		ws, err := models.Weights(m, el, at, p.params)
		if err != nil {
			return nil, err
		}
		rev := models.Split(revenue, ws, 2)
		cr := models.Split(credit, ws, 4)
		for i, w := range ws {
			nc := decimal.Zero
			if c.NewCustomer && c.Kind != schemas.ConversionRefund {
				nc = cr[i]
			}
			out = append(out, attrRow{
				ID: AttributionID(c.ID, m, w.PartnerID), ConversionID: c.ID, UserID: c.UserID,
				PartnerID: w.PartnerID, Model: m, Kind: c.Kind, Version: uint64(len(el)),
				Credit: cr[i], Revenue: rev[i], NewCustomer: nc, At: c.At,
			})
		}
	}
	return out, nil
}

// decode validates one record; a bad one becomes a dead letter.
func (p *Processor) decode(r *kgo.Record, b *batch) {
	topic := r.Topic
	fail := func(reason string) {
		b.dead = append(b.dead, dead{rec: r, reason: reason})
		p.m.records.WithLabelValues(topic, "dead_letter").Inc()
	}
	var err error
	switch topic {
	case p.names.Topic(schemas.TopicTouchpoints):
		var t schemas.Touchpoint
		if err = decodeValid(schemas.KindTouchpoint, r.Value, &t); err == nil {
			err = p.checkTouch(&t)
		}
		if err != nil {
			fail(err.Error())
			return
		}
		t.OccurredAt = t.OccurredAt.UTC().Truncate(time.Second)
		b.touches = append(b.touches, touch{t})
	case p.names.Topic(schemas.TopicConversions):
		var c schemas.Conversion
		if err = decodeValid(schemas.KindConversion, r.Value, &c); err != nil {
			fail(err.Error())
			return
		}
		rate, ok := p.rates[c.Currency]
		if !ok {
			fail(fmt.Sprintf("conversion: unknown currency %q (not in partner.attribution.currency_rates)", c.Currency))
			return
		}
		if reason := checkConv(&c); reason != "" {
			fail(reason)
			return
		}
		b.convs = append(b.convs, conv{
			ID: c.ID, UserID: c.UserID, Kind: c.Kind, RefundOf: c.RefundOf, Amount: c.Amount, Currency: c.Currency,
			AmountBase: models.ToBase(c.Amount, rate), NewCustomer: c.NewCustomer,
			At: c.OccurredAt.UTC().Truncate(time.Second),
		})
	case p.names.Topic(schemas.TopicCosts):
		var c schemas.Cost
		if err = decodeValid(schemas.KindCost, r.Value, &c); err != nil {
			fail(err.Error())
			return
		}
		rate, ok := p.rates[c.Currency]
		switch {
		case !ok:
			fail(fmt.Sprintf("cost: unknown currency %q (not in partner.attribution.currency_rates)", c.Currency))
			return
		case c.Amount.IsNegative():
			fail("cost: negative amount")
			return
		case c.OccurredAt.IsZero():
			fail("cost: missing occurred_at")
			return
		}
		c.OccurredAt = c.OccurredAt.UTC().Truncate(time.Second)
		b.costs = append(b.costs, cost{Cost: c, AmountBase: models.ToBase(c.Amount, rate)})
	default:
		fail("unexpected topic " + topic)
		return
	}
	p.m.records.WithLabelValues(topic, "ok").Inc()
}

// decodeValid checks doc against the kind's JSON Schema, then decodes it.
func decodeValid(kind string, doc []byte, v any) error {
	if err := schemas.Validate(kind, doc); err != nil {
		return err
	}
	if err := json.Unmarshal(doc, v); err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	return nil
}

func (p *Processor) checkTouch(t *schemas.Touchpoint) error {
	switch {
	case t.ID == "" || t.UserID == "" || t.PartnerID == "":
		return errors.New("touchpoint: missing id, user_id or partner_id")
	case !p.sources[t.Source]:
		return fmt.Errorf("touchpoint: source %q is not in partner.attribution.touchpoint_sources", t.Source)
	case t.OccurredAt.IsZero():
		return errors.New("touchpoint: missing occurred_at")
	}
	return nil
}

func checkConv(c *schemas.Conversion) string {
	switch {
	case c.ID == "" || c.UserID == "":
		return "conversion: missing id or user_id"
	case c.OccurredAt.IsZero():
		return "conversion: missing occurred_at"
	case c.Kind == schemas.ConversionRefund && c.RefundOf == "":
		return "conversion: refund without refund_of"
	case c.Kind == schemas.ConversionRefund && c.RefundOf == c.ID:
		return "conversion: refund_of names the refund itself"
	case c.Kind != schemas.ConversionRefund && c.RefundOf != "":
		return "conversion: refund_of on a " + c.Kind
	case c.Kind != schemas.ConversionRefund && c.Amount.IsNegative():
		return "conversion: negative amount on a " + c.Kind + " (refunds are kind refund)"
	}
	return ""
}

// deadLetter produces the batch's malformed records to the attribution DLQ
// and waits for the broker's acknowledgement.
func (p *Processor) deadLetter(ctx context.Context, ds []dead) error {
	if len(ds) == 0 {
		return nil
	}
	topic := p.names.Topic(schemas.TopicAttrDLQ)
	recs := make([]*kgo.Record, 0, len(ds))
	for _, d := range ds {
		dl := schemas.DeadLetter{
			SchemaVersion: schemas.SchemaVersion,
			Reason:        d.reason,
			SourceTopic:   d.rec.Topic,
		}
		if json.Valid(d.rec.Value) {
			dl.Payload = json.RawMessage(d.rec.Value)
		} else {
			dl.Raw = d.rec.Value
		}
		v, err := json.Marshal(dl)
		if err != nil {
			return err
		}
		out := &kgo.Record{Topic: topic, Key: d.rec.Key, Value: v, Headers: d.rec.Headers}
		recs = append(recs, out)
		p.opt.Log.Warn("attribution record dead-lettered", "topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset, "reason", d.reason)
	}
	if err := p.opt.Producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce dead letters: %w", err)
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
