package webhooks

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/ssrf"
	"github.com/partners-engine/partners-engine/schemas"
)

func secret(b byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

func TestWebhookIDDeterministic(t *testing.T) {
	a := WebhookID("evt_1", "ep_1")
	if a != WebhookID("evt_1", "ep_1") {
		t.Fatal("webhook id not deterministic")
	}
	if !strings.HasPrefix(a, "msg_") || len(a) != 4+32 {
		t.Fatalf("webhook id %q: want msg_ + 32 hex", a)
	}
	for _, other := range []string{WebhookID("evt_1", "ep_2"), WebhookID("evt_2", "ep_1"), WebhookID("evt_1e", "p_1")} {
		if other == a {
			t.Fatalf("distinct (event, endpoint) pairs share id %s", a)
		}
	}
}

// TestSignVerifiesWithStandardWebhooks checks our signatures with the
// official Go library, for one secret and during a rotation (both verify),
// and that a tampered body or id does not.
func TestSignVerifiesWithStandardWebhooks(t *testing.T) {
	oldS, newS := secret(1), secret(2)
	body := []byte(`{"type":"order.created","data":{"x":1}}`)
	now := time.Now()
	for _, tc := range []struct {
		name    string
		secrets []string
	}{{"single", []string{newS}}, {"rotation", []string{newS, oldS}}} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := Sign(tc.secrets, "msg_abc", now, body)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(sig, "v1,"); got != len(tc.secrets) {
				t.Fatalf("signature %q has %d v1 entries, want %d", sig, got, len(tc.secrets))
			}
			h := http.Header{}
			h.Set("webhook-id", "msg_abc")
			h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
			h.Set("webhook-signature", sig)
			for _, s := range tc.secrets {
				wh, err := standardwebhooks.NewWebhook(s)
				if err != nil {
					t.Fatal(err)
				}
				if err := wh.Verify(body, h); err != nil {
					t.Fatalf("official library rejects our signature: %v", err)
				}
				if err := wh.Verify(append([]byte{' '}, body...), h); err == nil {
					t.Fatal("tampered body verified")
				}
				h2 := h.Clone()
				h2.Set("webhook-id", "msg_other")
				if err := wh.Verify(body, h2); err == nil {
					t.Fatal("signature verified under another webhook-id")
				}
			}
			stranger, _ := standardwebhooks.NewWebhook(secret(9))
			if err := stranger.Verify(body, h); err == nil {
				t.Fatal("a foreign secret verified")
			}
		})
	}
	if _, err := Sign(nil, "id", now, body); err == nil {
		t.Fatal("signing without secrets must fail")
	}
	if _, err := Sign([]string{"whsec_***"}, "id", now, body); err == nil {
		t.Fatal("a malformed secret must fail")
	}
}

// TestMappingContracts runs every example of schemas/examples/mappings: the
// contract of payload versions and declarative mappings.
func TestMappingContracts(t *testing.T) {
	files, err := filepath.Glob("../../schemas/examples/mappings/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no mapping examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var ex struct {
				Event    json.RawMessage  `json:"event"`
				Endpoint schemas.Endpoint `json:"endpoint"`
				Want     json.RawMessage  `json:"want"`
				Error    string           `json:"error"`
			}
			if err := json.Unmarshal(b, &ex); err != nil {
				t.Fatal(err)
			}
			if err := schemas.Validate(schemas.KindEvent, ex.Event); err != nil {
				t.Fatalf("example event is invalid: %v", err)
			}
			var ev schemas.Event
			if err := json.Unmarshal(ex.Event, &ev); err != nil {
				t.Fatal(err)
			}
			got, err := Render(&ev, ex.Endpoint)
			if ex.Error != "" {
				if err == nil || !strings.Contains(err.Error(), ex.Error) {
					t.Fatalf("want error containing %q, got %v", ex.Error, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("rendered payload is not JSON: %s", got)
			}
			_ = json.Unmarshal(ex.Want, &w)
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("rendered\n%s\nwant\n%s", got, ex.Want)
			}
			again, _ := Render(&ev, ex.Endpoint)
			if !bytes.Equal(got, again) {
				t.Fatalf("rendering is not deterministic:\n%s\n%s", got, again)
			}
			if bytes.Contains(got, []byte("tenant_id")) {
				t.Fatalf("payload leaks the routing field tenant_id: %s", got)
			}
		})
	}
}

func TestMappingKeepsNumberText(t *testing.T) {
	ev := schemas.Event{ID: "e", Type: "order.created", OccurredAt: time.Unix(0, 0), Data: json.RawMessage(`{"total": 129.90, "big": 12345678901234567890}`)}
	got, err := Render(&ev, schemas.Endpoint{Mapping: &schemas.FieldMapping{Version: 1, Fields: map[string]string{"t": "data.total", "b": "data.big"}}})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != `{"b":12345678901234567890,"t":129.90}` {
		t.Fatalf("numbers changed: %s", got)
	}
}

func TestClassify(t *testing.T) {
	for status, want := range map[int]Class{200: Delivered, 204: Delivered, 299: Delivered, 301: Permanent, 400: Permanent,
		401: Permanent, 404: Permanent, 408: Retryable, 409: Permanent, 410: Gone, 422: Permanent, 429: Retryable,
		500: Retryable, 502: Retryable, 503: Retryable, 504: Retryable} {
		if got := classify(status); got != want {
			t.Errorf("classify(%d) = %v, want %v", status, got, want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "0": 0, "-1": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second, now.Add(-time.Minute).Format(http.TimeFormat): 0} {
		if got := retryAfter(in, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestGuard(t *testing.T) {
	rules, err := ssrf.ParseRules([]string{"127.0.0.1:8080"})
	if err != nil {
		t.Fatal(err)
	}
	g := ssrf.NewGuard(rules)
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "127.0.0.2": false, "10.1.2.3": false, "172.16.5.4": false, "192.168.1.1": false,
		"169.254.169.254": false, "100.64.0.1": false, "0.0.0.0": false, "::1": false, "fe80::1": false, "fd00::1": false,
		"fd00:ec2::254": false, "::ffff:10.0.0.1": false, "::ffff:127.0.0.1": true, "93.184.216.34": true, "2606:2800:220:1::": true,
		"224.0.0.1": false,
	} {
		if got := g.Allowed("", netip.AddrPortFrom(netip.MustParseAddr(addr), 8080)); got != want {
			t.Errorf("Allowed(%s:8080) = %v, want %v", addr, got, want)
		}
	}
	if g.Allowed("", netip.MustParseAddrPort("127.0.0.1:8123")) {
		t.Error("an allow-list entry for 127.0.0.1:8080 allowed 127.0.0.1:8123")
	}
	dial := g.DialContext(time.Second, time.Second)
	if _, err := dial(context.Background(), "tcp", "10.0.0.1:443"); !errors.Is(err, ssrf.ErrBlocked) {
		t.Errorf("dial to 10.0.0.1: %v, want blocked", err)
	}
}

func TestFilters(t *testing.T) {
	f, err := newFilters()
	if err != nil {
		t.Fatal(err)
	}
	ev := map[string]any{"type": "order.completed", "data": map[string]any{"total": 150.0, "currency": "EUR"}}
	for expr, want := range map[string]bool{
		`event.type == "order.completed"`:                                 true,
		`event.data.total > 100.0 && event.data.currency == "EUR"`:        true,
		`event.data.total > 200.0`:                                        false,
		`event.data.missing == "x"`:                                       false, // evaluation error: no match
		`has(event.data.currency) && event.data.currency.startsWith("E")`: true,
	} {
		got, err := f.Match(expr, ev)
		if err != nil || got != want {
			t.Errorf("Match(%s) = %v, %v; want %v", expr, got, err, want)
		}
	}
	if _, err := f.Match(`event.type ==`, ev); err == nil {
		t.Error("a filter that does not compile must return an error")
	}
	if _, err := f.Match(`event.data.total + 1.0`, ev); err == nil {
		t.Log("non-bool filter accepted at compile time (dyn); evaluated as no match")
	}
}

// TestFastEventAgreesWithSchema: the fan-out's one-pass event check accepts
// every valid example of schemas/examples/event and none of the invalid
// ones, and decodes them as json.Unmarshal does.
func TestFastEventAgreesWithSchema(t *testing.T) {
	for _, dir := range []string{"../../schemas/examples/event", "../../schemas/examples/event/invalid"} {
		files, _ := filepath.Glob(dir + "/*.json")
		if len(files) == 0 {
			t.Fatalf("no examples in %s", dir)
		}
		for _, f := range files {
			b, _ := os.ReadFile(f)
			ev, ok := fastEvent(b)
			valid := schemas.Validate(schemas.KindEvent, b) == nil
			if ok && !valid || !strings.Contains(dir, "invalid") && !ok {
				t.Errorf("%s: fast path %v, schema valid %v", f, ok, valid)
			}
			if ok {
				var want schemas.Event
				_ = json.Unmarshal(b, &want)
				if !reflect.DeepEqual(*ev, want) && !(ev.OccurredAt.Equal(want.OccurredAt) && ev.ID == want.ID && bytes.Equal(ev.Data, want.Data)) {
					t.Errorf("%s: decoded %+v, want %+v", f, *ev, want)
				}
			}
		}
	}
}

// TestInputDeadLetterFitsARecord: a malformed input with a huge key, value
// and reason still gets a dead letter (and index entry) of bounded size, so
// producing it cannot fail on the broker's record limit and stall the
// partition behind it.
func TestInputDeadLetterFitsARecord(t *testing.T) {
	r := &kgo.Record{Topic: "partners.events.v1", Partition: 2, Offset: 7,
		Key: bytes.Repeat([]byte("k"), 400<<10), Value: bytes.Repeat([]byte("{"), 900<<10)}
	key, dl := inputDeadLetter(r, ReasonMalformedRecord, strings.Repeat("why ", 100<<10), 64<<10)
	recs := deadLetterPair(context.Background(), slog.New(slog.DiscardHandler), kafka.Names{}, key, string(r.Key), dl)
	if len(recs) != 2 {
		t.Fatalf("%d records, want the dead letter and its index entry", len(recs))
	}
	for _, out := range recs {
		if n, max := recordSize(out), maxRawBytes*4/3+16<<10; n > max { // raw is base64 in JSON
			t.Errorf("%s: %d bytes, want at most %d: the raw copy and the capped key and reason", out.Topic, n, max)
		}
		var got schemas.DeadLetter
		if err := json.Unmarshal(out.Value, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Reason) != schemas.MaxDeadLetterReasonBytes || !strings.HasPrefix(got.Reason, "why why") {
			t.Errorf("%s: reason of %d bytes, want the first %d", out.Topic, len(got.Reason), schemas.MaxDeadLetterReasonBytes)
		}
		if len(got.Raw) != maxRawBytes || *got.SourceOffset != 7 {
			t.Errorf("%s: raw %d bytes at offset %d, want the first %d at 7", out.Topic, len(got.Raw), *got.SourceOffset, maxRawBytes)
		}
	}
	if len(recs[0].Key) != schemas.MaxDeadLetterKeyBytes || string(recs[1].Key) != "input/partners.events.v1/2/7" {
		t.Errorf("keys: DLQ %d bytes (want %d), index %q", len(recs[0].Key), schemas.MaxDeadLetterKeyBytes, recs[1].Key)
	}
}
