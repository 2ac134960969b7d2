package attribution_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestPoisonNeverStalls puts, between valid records of one partition, an
// 800 KB touchpoint, a conversion whose user_id is 140 KB of quotes, one
// whose user_id is longer than the schema allows, and a touchpoint
// ClickHouse "cannot store" (a fault seam): each lands on the DLQ with its
// reason — the large ones as a truncated copy with their size and SHA-256 —
// and the valid records behind them are in the ROI numbers.
func TestPoisonNeverStalls(t *testing.T) {
	e := newEnv(t)
	n := e.names
	tp, cv := n.Topic(schemas.TopicTouchpoints), n.Topic(schemas.TopicConversions)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	const key = "one-partition" // every record on the same partition of its topic
	touch := func(id, user string, referrer string) *kgo.Record {
		return rec(tp, key, schemas.Touchpoint{SchemaVersion: "1", ID: id, UserID: user, PartnerID: "PZ", Source: "referral_header", Referrer: referrer, OccurredAt: at})
	}
	conv := func(id, user, amount string) *kgo.Record {
		return rec(cv, key, schemas.Conversion{SchemaVersion: "1", ID: id, UserID: user, Kind: "purchase", Amount: decimal.RequireFromString(amount), Currency: "USD", OccurredAt: at.Add(time.Minute)})
	}
	big := touch("t-big", "u-big", "https://example.com/?"+strings.Repeat("x", 800<<10))
	quotes := conv("c-quotes", strings.Repeat("'", 140<<10), "5")
	long := conv("c-long", strings.Repeat("u", 300), "5")
	unwritable := touch("t-unwritable", "u-c", "")
	e.publish(t, []*kgo.Record{
		touch("t-a", "u-a", ""), conv("c-a", "u-a", "10"),
		big, quotes, long, unwritable,
		touch("t-b", "u-b", ""), conv("c-b", "u-b", "20"),
	})
	e.start(t, nil, func(p *attribution.Processor) { attribution.FailInsertsOf(p, "t-unwritable") })
	e.waitCaughtUp(t, 60*time.Second)

	tots, err := roi.Load(context.Background(), e.conn, roi.Query{PartnerID: "PZ", Model: "last_touch", Window: 7}, roi.Rollups)
	if err != nil || len(tots) != 1 || !tots[0].Revenue.Equal(decimal.NewFromInt(30)) || tots[0].Leads != 2 {
		t.Fatalf("ROI of the valid records: %+v %v (want revenue 30, 2 leads)", tots, err)
	}
	got := readDLQ(t, e, 4)
	byOffset := map[string]schemas.DeadLetter{}
	for _, d := range got {
		if err := schemas.Validate(schemas.KindDeadLetter, mustJSON(t, d)); err != nil {
			t.Errorf("dead letter does not match its schema: %v", err)
		}
		byOffset[fmt.Sprintf("%s/%d", d.SourceTopic, *d.SourceOffset)] = d
	}
	for _, c := range []struct {
		r         *kgo.Record
		reason    string
		truncated bool
		code      string
	}{
		{big, "record too large: 819", true, "oversized_record"},
		{quotes, "record too large: 143", true, "oversized_record"},
		{long, "at /user_id: maxLength", false, "malformed_record"},
		{unwritable, "cannot be written to ClickHouse", false, "unwritable_record"},
	} {
		d, ok := byOffset[fmt.Sprintf("%s/%d", c.r.Topic, c.r.Offset)]
		if !ok {
			t.Errorf("no dead letter for %s offset %d (have %v)", c.r.Topic, c.r.Offset, got)
			continue
		}
		sum := sha256.Sum256(c.r.Value)
		switch {
		case d.ReasonCode != c.code:
			t.Errorf("dead letter of %s/%d: reason code %q, want %q", c.r.Topic, c.r.Offset, d.ReasonCode, c.code)
		case !strings.Contains(d.Reason, c.reason):
			t.Errorf("dead letter of %s/%d: reason %q, want %q", c.r.Topic, c.r.Offset, d.Reason, c.reason)
		case d.Truncated != c.truncated || d.PayloadBytes != len(c.r.Value) || d.PayloadSHA256 != hex.EncodeToString(sum[:]):
			t.Errorf("dead letter of %s/%d: truncated %v bytes %d sha %s, want %v %d %x", c.r.Topic, c.r.Offset, d.Truncated, d.PayloadBytes, d.PayloadSHA256, c.truncated, len(c.r.Value), sum)
		case c.truncated && (len(d.Raw) != e.cfg.Partner.Attribution.DLQMaxPayloadBytes || string(d.Raw) != string(c.r.Value[:len(d.Raw)])):
			t.Errorf("dead letter of %s/%d: raw holds %d bytes, want the first %d of the record", c.r.Topic, c.r.Offset, len(d.Raw), e.cfg.Partner.Attribution.DLQMaxPayloadBytes)
		case !c.truncated && string(d.Payload) != string(c.r.Value):
			t.Errorf("dead letter of %s/%d: payload %q, want the record", c.r.Topic, c.r.Offset, d.Payload)
		}
	}
}

// TestHistoryQueriesOfLargeIDs: 1200 users whose ids are 250 quotes and a
// number — 600 KB of ids once escaped as SQL literals, more than twice
// 18.16's max_query_size — are attributed, and after a restart (empty cache)
// their histories load from ClickHouse for their second conversion: the ids
// travel as an external table beside the query, never in its text.
func TestHistoryQueriesOfLargeIDs(t *testing.T) {
	e := newEnv(t)
	n := e.names
	tp, cv := n.Topic(schemas.TopicTouchpoints), n.Topic(schemas.TopicConversions)
	at := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Second)
	const users = 1200
	user := func(i int) string { return strings.Repeat("'", 250) + fmt.Sprintf("%05d", i) }
	var first, second []*kgo.Record
	for i := range users {
		u := user(i)
		first = append(first,
			rec(tp, u, schemas.Touchpoint{SchemaVersion: "1", ID: fmt.Sprintf("qt%d", i), UserID: u, PartnerID: "PQ", Source: "utm", OccurredAt: at}),
			rec(cv, u, schemas.Conversion{SchemaVersion: "1", ID: fmt.Sprintf("qc%d", i), UserID: u, Kind: "purchase", Amount: decimal.NewFromInt(1), Currency: "USD", OccurredAt: at.Add(time.Minute)}))
		second = append(second,
			rec(cv, u, schemas.Conversion{SchemaVersion: "1", ID: fmt.Sprintf("qd%d", i), UserID: u, Kind: "purchase", Amount: decimal.NewFromInt(2), Currency: "USD", OccurredAt: at.Add(time.Hour)}))
	}
	e.cfg.Partner.Attribution.Batch.Size = 5000
	e.cfg.Partner.Attribution.Batch.Linger = time.Second
	stop := e.start(t, nil)
	e.publish(t, first)
	e.waitCaughtUp(t, 120*time.Second)
	stop()
	e.start(t, nil)
	e.publish(t, second)
	e.waitCaughtUp(t, 120*time.Second)
	for _, src := range []roi.Source{roi.Rollups, roi.Raw} {
		tots, err := roi.Load(context.Background(), e.conn, roi.Query{PartnerID: "PQ", Model: "last_touch", Window: 7}, src)
		if err != nil || len(tots) != 1 || !tots[0].Revenue.Equal(decimal.NewFromInt(3*users)) || tots[0].Leads != users || tots[0].Customers != users {
			t.Fatalf("%v: %+v %v (want revenue %d, %d leads and customers)", src, tots, err, 3*users, users)
		}
	}
	if strings.Contains(e.log.String(), "dead-lettered") || strings.Contains(e.log.String(), "max_query_size") {
		t.Fatalf("records dead-lettered or a query too large:\n%s", tail(e.log.String(), 3000))
	}
}
