package attribution

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fastjson"

	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/schemas"
)

// maxAmount is the largest magnitude a Decimal(18,4) column holds.
var maxAmount = decimal.RequireFromString("99999999999999.9999")

// decode validates one record; a bad one becomes a dead letter. fp is the
// caller's parser (one per goroutine).
func (p *Processor) decode(fp *fastjson.Parser, r *kgo.Record, b *batch) {
	topic := r.Topic
	failCode := func(code, reason string) {
		b.dead = append(b.dead, dead{rec: r, reason: reason, code: code})
		p.m.records.WithLabelValues(topic, "dead_letter").Inc()
	}
	fail := func(reason string) { failCode(codeMalformed, reason) }
	if reason, ok := p.poison.get(posOf(r)); ok {
		failCode(codeUnwritable, reason)
		return
	}
	if max := p.opt.Config.MaxRecordBytes; len(r.Value) > max {
		failCode(codeOversized, fmt.Sprintf("record too large: %d bytes (partner.attribution.max_record_bytes is %d)", len(r.Value), max))
		return
	}
	var err error
	switch topic {
	case p.names.Topic(schemas.TopicTouchpoints):
		t, fast := fastTouch(fp, r.Value)
		if !fast {
			t = schemas.Touchpoint{}
			err = decodeValid(schemas.KindTouchpoint, r.Value, &t)
		}
		if err == nil {
			err = p.checkTouch(&t)
		}
		if err != nil {
			fail(err.Error())
			return
		}
		t.OccurredAt = t.OccurredAt.UTC().Truncate(time.Second)
		b.touches = append(b.touches, touch{Touchpoint: t, pos: posOf(r)})
	case p.names.Topic(schemas.TopicConversions):
		c, fast := fastConversion(fp, r.Value)
		if !fast {
			c = schemas.Conversion{}
			if err = decodeValid(schemas.KindConversion, r.Value, &c); err != nil {
				fail(err.Error())
				return
			}
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
		base := models.ToBase(c.Amount, rate)
		if base.Abs().GreaterThan(maxAmount) {
			fail("conversion: amount in the base currency does not fit Decimal(18,4)")
			return
		}
		b.convs = append(b.convs, conv{
			ID: c.ID, UserID: c.UserID, Kind: c.Kind, RefundOf: c.RefundOf, Amount: c.Amount, Currency: c.Currency,
			AmountBase: base, NewCustomer: c.NewCustomer,
			At: c.OccurredAt.UTC().Truncate(time.Second), pos: posOf(r),
		})
	case p.names.Topic(schemas.TopicCosts):
		c, fast := fastCost(fp, r.Value)
		if !fast {
			c = schemas.Cost{}
			if err = decodeValid(schemas.KindCost, r.Value, &c); err != nil {
				fail(err.Error())
				return
			}
		}
		rate, ok := p.rates[c.Currency]
		switch {
		case !ok:
			fail(fmt.Sprintf("cost: unknown currency %q (not in partner.attribution.currency_rates)", c.Currency))
			return
		case c.Amount.IsNegative():
			fail("cost: negative amount")
			return
		}
		if err := checkTime("cost", c.OccurredAt); err != nil {
			fail(err.Error())
			return
		}
		base := models.ToBase(c.Amount, rate)
		if base.GreaterThan(maxAmount) {
			fail("cost: amount in the base currency does not fit Decimal(18,4)")
			return
		}
		c.OccurredAt = c.OccurredAt.UTC().Truncate(time.Second)
		b.costs = append(b.costs, cost{Cost: c, AmountBase: base, pos: posOf(r)})
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

// minTime is the first second a ClickHouse DateTime holds.
var minTime = time.Unix(0, 0)

// maxTime is the last second a ClickHouse DateTime (UInt32) holds on every
// supported version.
var maxTime = time.Unix(1<<32-1, 0)

func checkTime(what string, t time.Time) error {
	switch {
	case t.IsZero():
		return fmt.Errorf("%s: missing occurred_at", what)
	case t.Before(minTime) || t.After(maxTime):
		return fmt.Errorf("%s: occurred_at %s is outside what ClickHouse DateTime holds (1970 to 2106)", what, t.UTC().Format(time.RFC3339))
	}
	return nil
}

func (p *Processor) checkTouch(t *schemas.Touchpoint) error {
	switch {
	case t.ID == "" || t.UserID == "" || t.PartnerID == "":
		return errors.New("touchpoint: missing id, user_id or partner_id")
	case !p.sources[t.Source]:
		return fmt.Errorf("touchpoint: source %q is not in partner.attribution.touchpoint_sources", t.Source)
	}
	return checkTime("touchpoint", t.OccurredAt)
}

func checkConv(c *schemas.Conversion) string {
	switch {
	case c.ID == "" || c.UserID == "":
		return "conversion: missing id or user_id"
	case c.Kind == schemas.ConversionRefund && c.RefundOf == "":
		return "conversion: refund without refund_of"
	case c.Kind == schemas.ConversionRefund && c.RefundOf == c.ID:
		return "conversion: refund_of names the refund itself"
	case c.Kind != schemas.ConversionRefund && c.RefundOf != "":
		return "conversion: refund_of on a " + c.Kind
	case c.Kind != schemas.ConversionRefund && c.Amount.IsNegative():
		return "conversion: negative amount on a " + c.Kind + " (refunds are kind refund)"
	}
	if err := checkTime("conversion", c.OccurredAt); err != nil {
		return err.Error()
	}
	return ""
}
