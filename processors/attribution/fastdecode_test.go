package attribution

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/valyala/fastjson"

	"github.com/partners-engine/partners-engine/schemas"
)

// fastKinds are the kinds with a fast path, each returning the decoded
// record and whether the fast path accepted it.
var fastKinds = map[string]func(*fastjson.Parser, []byte) (any, bool){
	schemas.KindTouchpoint: func(p *fastjson.Parser, b []byte) (any, bool) { return fastTouch(p, b) },
	schemas.KindConversion: func(p *fastjson.Parser, b []byte) (any, bool) { return fastConversion(p, b) },
	schemas.KindCost:       func(p *fastjson.Parser, b []byte) (any, bool) { return fastCost(p, b) },
}

func slowDecode(kind string, doc []byte) (any, error) {
	var v any
	switch kind {
	case schemas.KindTouchpoint:
		v = new(schemas.Touchpoint)
	case schemas.KindConversion:
		v = new(schemas.Conversion)
	default:
		v = new(schemas.Cost)
	}
	if err := decodeValid(kind, doc, v); err != nil {
		return nil, err
	}
	return reflect.ValueOf(v).Elem().Interface(), nil
}

// sameRecord compares two decoded records field by field (times and
// decimals by value).
func sameRecord(a, b any) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() {
		return false
	}
	for i := range va.NumField() {
		x, y := va.Field(i).Interface(), vb.Field(i).Interface()
		switch x := x.(type) {
		case time.Time:
			if !x.Equal(y.(time.Time)) {
				return false
			}
		case decimal.Decimal:
			if !x.Equal(y.(decimal.Decimal)) || x.String() != y.(decimal.Decimal).String() {
				return false
			}
		default:
			if !reflect.DeepEqual(x, y) {
				return false
			}
		}
	}
	return true
}

// checkFast is the property: the fast path accepts only what the schema
// accepts, and then decodes what encoding/json decodes.
func checkFast(t *testing.T, kind string, doc []byte) (accepted bool) {
	t.Helper()
	var p fastjson.Parser
	got, ok := fastKinds[kind](&p, doc)
	want, err := slowDecode(kind, doc)
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("%s: the fast path accepts what the schema refuses (%v):\n%s", kind, err, doc)
	}
	if !sameRecord(got, want) {
		t.Fatalf("%s: the fast path decodes\n %+v\nencoding/json\n %+v\nfrom %s", kind, got, want, doc)
	}
	return true
}

func examples(t *testing.T, kind string) [][]byte {
	files, _ := filepath.Glob(filepath.Join("..", "..", "schemas", "examples", kind, "*.json"))
	bad, _ := filepath.Glob(filepath.Join("..", "..", "schemas", "examples", kind, "invalid", "*.json"))
	var out [][]byte
	for _, f := range append(files, bad...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if len(files) == 0 {
		t.Fatalf("no examples of %s", kind)
	}
	return out
}

var mutantValues = []string{
	`""`, `"1"`, `"x"`, `1`, `1.5`, `-3`, `true`, `false`, `null`, `[]`, `{}`, `"USD"`, `"usd"`, `"US"`,
	`"10"`, `"-10"`, `"10.12345"`, `"1e3"`, `"99999999999999.9999"`, `"999999999999999"`, `"0.5"`, `" 1"`,
	`"2025-03-10T08:00:00Z"`, `"2025-03-10t08:00:00z"`, `"2025-03-10T08:00:00.123456789+05:30"`, `"2025-03-10 08:00:00Z"`,
	`"2025-02-30T08:00:00Z"`, `"2016-12-31T23:59:60Z"`, `"2025-03-10T24:00:00Z"`, `"2025-03-10T08:00:00"`, `"2025-03-10"`,
	`"purchase"`, `"signup"`, `"refund"`, `"Purchase"`, `"utm"`, `"referral_header"`, `"api_key"`, `"UTM"`,
	`"4bf92f3577b34da6a3ce929d0e0e4736"`, `"4BF92F3577B34DA6A3CE929D0E0E4736"`, `"\u0000"`, `"\ud83d\ude00"`, `"\ud800"`,
	`"é"`, "\"\xff\xfe\"", `"a\"b"`, `"\\"`,
	`"` + strings.Repeat("a", 256) + `"`, `"` + strings.Repeat("a", 257) + `"`, `"` + strings.Repeat("é", 256) + `"`,
	`"` + strings.Repeat("é", 257) + `"`, `"` + strings.Repeat("x", 512) + `"`, `"` + strings.Repeat("x", 513) + `"`,
	`"` + strings.Repeat("'", 256) + `"`, `"` + strings.Repeat("r", 64) + `"`, `"` + strings.Repeat("r", 65) + `"`,
}

var mutantKeys = []string{"schema_version", "id", "user_id", "partner_id", "source", "occurred_at", "utm_source", "utm_medium",
	"utm_campaign", "referrer", "region", "trace_id", "kind", "amount", "currency", "new_customer", "refund_of", "category",
	"ID", "Id", "extra", "schema_Version"}

// mutate returns doc (a JSON object) changed in one or two random ways.
func mutate(r *rand.Rand, doc []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(doc, &m) != nil {
		return doc
	}
	for range 1 + r.IntN(2) {
		switch r.IntN(4) {
		case 0: // drop a member
			for k := range m {
				delete(m, k)
				break
			}
		default: // set a member
			m[mutantKeys[r.IntN(len(mutantKeys))]] = json.RawMessage(mutantValues[r.IntN(len(mutantValues))])
		}
	}
	b, _ := json.Marshal(m)
	switch r.IntN(10) {
	case 0: // a repeated key
		var k string
		for k = range m {
			break
		}
		if k != "" {
			b = append(b[:len(b)-1], []byte(fmt.Sprintf(`,%q:%s}`, k, mutantValues[r.IntN(len(mutantValues))]))...)
		}
	case 1: // trailing bytes
		b = append(b, " x"...)
	case 2: // not an object
		b = []byte(`[` + string(b) + `]`)
	}
	return b
}

// TestFastDecodeAgreesWithSchema holds the fast path to the JSON Schemas on
// the contract examples and 30 000 mutations of them: it never accepts a
// record the schema refuses, decodes exactly what encoding/json does, and
// accepts every valid example (it is not a path that always gives up).
func TestFastDecodeAgreesWithSchema(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for kind := range fastKinds {
		docs := examples(t, kind)
		accepted := 0
		for _, d := range docs {
			if checkFast(t, kind, d) {
				accepted++
			}
		}
		valid, _ := filepath.Glob(filepath.Join("..", "..", "schemas", "examples", kind, "*.json"))
		if accepted != len(valid) {
			t.Errorf("%s: the fast path accepts %d of the %d valid examples", kind, accepted, len(valid))
		}
		mutants := 0
		for i := range 10_000 {
			if checkFast(t, kind, mutate(r, docs[i%len(docs)])) {
				mutants++
			}
		}
		t.Logf("%s: fast path accepted %d of 10000 mutants, all of them valid", kind, mutants)
	}
}

func FuzzFastDecode(f *testing.F) {
	for _, kind := range []string{schemas.KindTouchpoint, schemas.KindConversion, schemas.KindCost} {
		files, _ := filepath.Glob(filepath.Join("..", "..", "schemas", "examples", kind, "*.json"))
		for _, file := range files {
			b, _ := os.ReadFile(file)
			f.Add(kind, b)
		}
	}
	f.Fuzz(func(t *testing.T, kind string, doc []byte) {
		if _, ok := fastKinds[kind]; ok {
			checkFast(t, kind, doc)
		}
	})
}

// TestFormatsMatchSchemaPatterns: the hand-written matchers of the fast
// path accept exactly what the schemas' patterns accept, on the edge cases
// and on 200 000 random strings over the patterns' alphabet.
func TestFormatsMatchSchemaPatterns(t *testing.T) {
	cases := []struct {
		name  string
		re    *regexp.Regexp
		match func(string) bool
		alpha string
		max   int
		seeds []string
	}{
		{"trace", regexp.MustCompile(`^[0-9a-f]{32}$`), isTraceID, "0123456789abcdefAZ-", 34,
			[]string{"0af7651916cd43dd8448eb211c80319c", "0AF7651916cd43dd8448eb211c80319c", ""}},
		{"currency", regexp.MustCompile(`^[A-Z]{3}$`), isCurrency, "ABZaz1", 4, []string{"EUR", "eur", "EURO"}},
		{"amount", regexp.MustCompile(`^-?[0-9]{1,14}(\.[0-9]{1,4})?$`), func(s string) bool { return isAmount(s, true) }, "0123456789.-+e", 22,
			[]string{"-0.5", "12345678901234.1234", "123456789012345", "1.", ".5", "-", "1.12345", "--1"}},
		{"cost", regexp.MustCompile(`^[0-9]{1,14}(\.[0-9]{1,4})?$`), func(s string) bool { return isAmount(s, false) }, "0123456789.-", 22,
			[]string{"-1", "0", "0.0001"}},
		{"date-time", regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$`), isDateTime,
			"0123456789-T:Z+.z ", 32,
			[]string{"2026-03-01T12:00:00Z", "2026-03-01T12:00:00.123456789+05:30", "2026-03-01T12:00:00.Z", "2026-03-01 12:00:00Z", "2026-03-01T12:00:00+0530", "2026-03-01T12:00:00z"}},
	}
	r := rand.New(rand.NewPCG(11, 12))
	for _, c := range cases {
		check := func(s string) {
			if got, want := c.match(s), c.re.MatchString(s); got != want {
				t.Fatalf("%s: %q matched %v, the pattern says %v", c.name, s, got, want)
			}
		}
		for _, s := range c.seeds {
			check(s)
			for i := range len(s) { // every one-byte change of a seed
				for _, b := range []byte(c.alpha) {
					check(s[:i] + string(b) + s[i+1:])
				}
				check(s[:i] + s[i+1:])
			}
		}
		for range 40_000 {
			b := make([]byte, r.IntN(c.max+1))
			for i := range b {
				b[i] = c.alpha[r.IntN(len(c.alpha))]
			}
			check(string(b))
		}
	}
}
