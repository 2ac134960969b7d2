package attribution

import (
	"time"
	"unicode/utf8"

	"github.com/shopspring/decimal"
	"github.com/valyala/fastjson"

	"github.com/partners-engine/partners-engine/schemas"
)

// The fast path of decoding: one parse (fastjson) that checks a record
// against the rules of its JSON Schema (schemas/json/*.v1.schema.json) and
// fills its Go type. It only ever says yes to a record the schema accepts,
// and then yields the struct encoding/json would: anything it is not sure of
// (an unknown or repeated key, invalid UTF-8, a time Go's RFC 3339 parser
// refuses, …) is left to the slow path — schemas.Validate, then
// encoding/json — which also writes the reason of a record that fails.
// TestFastDecodeAgreesWithSchema holds the two paths to that.

// The formats of the schemas' patterns, matched by hand (a regexp per
// field of every record cost more than the rest of the decode; the
// patterns are in fastdecode_test.go, which holds these to them):
//
//	trace id   ^[0-9a-f]{32}$
//	currency   ^[A-Z]{3}$
//	amount     ^-?[0-9]{1,14}(\.[0-9]{1,4})?$   (cost: no sign)
//	date-time  ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$

func isTraceID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isCurrency(s string) bool {
	return len(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] >= 'A' && s[2] <= 'Z'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// digitsFrom returns the end of the run of digits of s starting at i.
func digitsFrom(s string, i int) int {
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i
}

// isAmount matches the amount pattern; signed allows a leading '-'.
func isAmount(s string, signed bool) bool {
	i := 0
	if signed && len(s) > 0 && s[0] == '-' {
		i++
	}
	j := digitsFrom(s, i)
	if j-i < 1 || j-i > 14 {
		return false
	}
	if j == len(s) {
		return true
	}
	if s[j] != '.' {
		return false
	}
	k := digitsFrom(s, j+1)
	return k == len(s) && k-(j+1) >= 1 && k-(j+1) <= 4
}

func isDateTime(s string) bool {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
		if !isDigit(s[i]) {
			return false
		}
	}
	i := 19
	if s[i] == '.' {
		j := digitsFrom(s, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	z := s[i:]
	return z == "Z" || len(z) == 6 && (z[0] == '+' || z[0] == '-') && isDigit(z[1]) && isDigit(z[2]) && z[3] == ':' && isDigit(z[4]) && isDigit(z[5])
}

// plain reports whether doc has no \u escape and no control character
// inside a string: fastjson and encoding/json differ on broken escapes (a
// lone surrogate), and fastjson takes raw control characters in strings,
// which JSON forbids; such documents take the slow path.
func plain(doc []byte) bool {
	in := false
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		switch {
		case !in:
			in = c == '"'
		case c == '\\':
			if i+1 < len(doc) && doc[i+1] == 'u' {
				return false
			}
			i++
		case c == '"':
			in = false
		case c < 0x20:
			return false
		}
	}
	return true
}

// fields walks the members of an object, calling f for each; false when a
// key repeats or f refuses.
func fields(o *fastjson.Object, f func(key []byte, v *fastjson.Value) bool) bool {
	ok := true
	var seen [16][]byte // the parser's bytes, valid while it visits
	n := 0
	o.Visit(func(key []byte, v *fastjson.Value) {
		if !ok {
			return
		}
		for _, s := range seen[:min(n, len(seen))] {
			if string(s) == string(key) {
				ok = false
				return
			}
		}
		if n < len(seen) {
			seen[n] = key
		} else {
			ok = false // more members than any valid record has
			return
		}
		n++
		ok = f(key, v)
	})
	return ok
}

// str returns v's string when it is a valid UTF-8 string of min..max code
// points.
func str(v *fastjson.Value, min, max int) (string, bool) {
	if v.Type() != fastjson.TypeString {
		return "", false
	}
	b, _ := v.StringBytes()
	if !utf8.Valid(b) {
		return "", false
	}
	n := utf8.RuneCount(b)
	if n < min || (max > 0 && n > max) {
		return "", false
	}
	return string(b), true
}

func dateTime(v *fastjson.Value) (time.Time, bool) {
	s, ok := str(v, 1, 64)
	if !ok || !isDateTime(s) {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

func decimalOf(v *fastjson.Value, signed bool) (decimal.Decimal, bool) {
	s, ok := str(v, 1, 32)
	if !ok || !isAmount(s, signed) {
		return decimal.Decimal{}, false
	}
	d, err := decimal.NewFromString(s)
	return d, err == nil
}

// fastFields parses doc as one JSON object of plain text and visits its
// fields (see fields); false when doc is not such an object or visit
// refused a field.
func fastFields(p *fastjson.Parser, doc []byte, visit func(k []byte, v *fastjson.Value) bool) bool {
	if !plain(doc) {
		return false
	}
	v, err := p.ParseBytes(doc)
	if err != nil {
		return false
	}
	o, err := v.Object()
	return err == nil && fields(o, visit)
}

// version reads schema_version, which must be "1".
func version(v *fastjson.Value) (string, bool) {
	s, ok := str(v, 1, 1)
	return s, ok && s == "1"
}

func fastTouch(p *fastjson.Parser, doc []byte) (schemas.Touchpoint, bool) {
	var t schemas.Touchpoint
	var have int
	const need = 1<<6 - 1
	ok := fastFields(p, doc, func(k []byte, v *fastjson.Value) bool {
		var ok bool
		switch string(k) {
		case "schema_version":
			t.SchemaVersion, ok = version(v)
			have |= 1
		case "id":
			t.ID, ok = str(v, 1, 256)
			have |= 2
		case "user_id":
			t.UserID, ok = str(v, 1, 256)
			have |= 4
		case "partner_id":
			t.PartnerID, ok = str(v, 1, 256)
			have |= 8
		case "source":
			t.Source, ok = str(v, 1, 32)
			ok = ok && (t.Source == schemas.SourceUTM || t.Source == schemas.SourceReferral || t.Source == schemas.SourceAPIKey)
			have |= 16
		case "occurred_at":
			t.OccurredAt, ok = dateTime(v)
			have |= 32
		case "utm_source":
			t.UTMSource, ok = str(v, 0, 512)
		case "utm_medium":
			t.UTMMedium, ok = str(v, 0, 512)
		case "utm_campaign":
			t.UTMCampaign, ok = str(v, 0, 512)
		case "referrer":
			t.Referrer, ok = str(v, 0, 512)
		case "region":
			t.Region, ok = str(v, 0, 64)
		case "trace_id":
			t.TraceID, ok = str(v, 32, 32)
			ok = ok && isTraceID(t.TraceID)
		}
		return ok
	})
	return t, ok && have == need
}

func fastConversion(p *fastjson.Parser, doc []byte) (schemas.Conversion, bool) {
	var c schemas.Conversion
	var have int
	const need = 1<<7 - 1
	ok := fastFields(p, doc, func(k []byte, v *fastjson.Value) bool {
		var ok bool
		switch string(k) {
		case "schema_version":
			c.SchemaVersion, ok = version(v)
			have |= 1
		case "id":
			c.ID, ok = str(v, 1, 256)
			have |= 2
		case "user_id":
			c.UserID, ok = str(v, 1, 256)
			have |= 4
		case "kind":
			c.Kind, ok = str(v, 1, 16)
			ok = ok && (c.Kind == schemas.ConversionPurchase || c.Kind == schemas.ConversionSignup || c.Kind == schemas.ConversionRefund)
			have |= 8
		case "amount":
			c.Amount, ok = decimalOf(v, true)
			have |= 16
		case "currency":
			c.Currency, ok = str(v, 3, 3)
			ok = ok && isCurrency(c.Currency)
			have |= 32
		case "occurred_at":
			c.OccurredAt, ok = dateTime(v)
			have |= 64
		case "new_customer":
			switch v.Type() {
			case fastjson.TypeTrue:
				c.NewCustomer, ok = true, true
			case fastjson.TypeFalse:
				c.NewCustomer, ok = false, true
			}
		case "refund_of":
			c.RefundOf, ok = str(v, 1, 256)
		}
		return ok
	})
	if c.Kind == schemas.ConversionRefund && c.RefundOf == "" {
		return c, false
	}
	return c, ok && have == need
}

func fastCost(p *fastjson.Parser, doc []byte) (schemas.Cost, bool) {
	var c schemas.Cost
	var have int
	const need = 1<<6 - 1
	ok := fastFields(p, doc, func(k []byte, v *fastjson.Value) bool {
		var ok bool
		switch string(k) {
		case "schema_version":
			c.SchemaVersion, ok = version(v)
			have |= 1
		case "id":
			c.ID, ok = str(v, 1, 256)
			have |= 2
		case "partner_id":
			c.PartnerID, ok = str(v, 1, 256)
			have |= 4
		case "amount":
			c.Amount, ok = decimalOf(v, false)
			have |= 8
		case "currency":
			c.Currency, ok = str(v, 3, 3)
			ok = ok && isCurrency(c.Currency)
			have |= 16
		case "occurred_at":
			c.OccurredAt, ok = dateTime(v)
			have |= 32
		case "category":
			c.Category, ok = str(v, 0, 128)
		}
		return ok
	})
	return c, ok && have == need
}
