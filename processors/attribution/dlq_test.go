package attribution_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/schemas"
)

func rec(topic, key string, v any) *kgo.Record {
	b, ok := v.([]byte)
	if !ok {
		b, _ = json.Marshal(v)
	}
	return &kgo.Record{Topic: topic, Key: []byte(key), Value: b}
}

// TestMalformedRecordsGoToDLQ sends bad JSON, missing ids, a negative cost
// and unknown currencies between valid records: each bad one lands on the
// attribution DLQ with its reason and source topic, every valid one (also
// those after the bad ones in the same partition) reaches ClickHouse.
func TestMalformedRecordsGoToDLQ(t *testing.T) {
	e := newEnv(t)
	n := e.names
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	tp, cv, co := n.Topic(schemas.TopicTouchpoints), n.Topic(schemas.TopicConversions), n.Topic(schemas.TopicCosts)
	good := func(i string) []*kgo.Record {
		return []*kgo.Record{
			rec(tp, "u"+i, schemas.Touchpoint{SchemaVersion: "1", ID: "t" + i, UserID: "u" + i, PartnerID: "p1", Source: "utm", OccurredAt: at}),
			rec(cv, "u"+i, schemas.Conversion{SchemaVersion: "1", ID: "c" + i, UserID: "u" + i, Kind: "purchase", Amount: decimal.RequireFromString("10"), Currency: "EUR", OccurredAt: at.Add(time.Minute)}),
			rec(co, "p1", schemas.Cost{SchemaVersion: "1", ID: "k" + i, PartnerID: "p1", Amount: decimal.RequireFromString("2.5"), Currency: "USD", OccurredAt: at}),
		}
	}
	bad := []struct {
		r      *kgo.Record
		reason string
	}{
		{rec(cv, "u1", []byte(`{"schema_version":"1","id":`)), "not JSON"},
		{rec(tp, "u1", []byte(`{"schema_version":"1","user_id":"u1","partner_id":"p1","source":"utm","occurred_at":"2026-01-01T00:00:00Z"}`)), "missing property 'id'"},
		{rec(co, "p1", []byte(`{"schema_version":"1","id":"neg","partner_id":"p1","amount":"-5","currency":"USD","occurred_at":"2026-01-01T00:00:00Z"}`)), "/amount"},
		{rec(cv, "u1", schemas.Conversion{SchemaVersion: "1", ID: "cx", UserID: "u1", Kind: "purchase", Amount: decimal.RequireFromString("1"), Currency: "JPY", OccurredAt: at}), "unknown currency"},
		{rec(co, "p1", schemas.Cost{SchemaVersion: "1", ID: "kx", PartnerID: "p1", Amount: decimal.RequireFromString("1"), Currency: "CHF", OccurredAt: at}), "unknown currency"},
		{rec(cv, "u1", schemas.Conversion{SchemaVersion: "1", ID: "cn", UserID: "u1", Kind: "purchase", Amount: decimal.RequireFromString("-3"), Currency: "USD", OccurredAt: at}), "negative amount"},
	}
	var all []*kgo.Record
	all = append(all, good("1")...)
	for _, b := range bad {
		all = append(all, b.r)
	}
	all = append(all, good("2")...)
	e.publish(t, all)
	e.start(t, nil)
	e.waitCaughtUp(t, 60*time.Second)

	var touches, convs, costs uint64
	ctx := context.Background()
	for q, dst := range map[string]*uint64{
		"SELECT uniqExact(id) FROM touchpoints": &touches, "SELECT uniqExact(id) FROM conversions": &convs, "SELECT uniqExact(id) FROM costs": &costs,
	} {
		if err := e.conn.QueryRow(ctx, q).Scan(dst); err != nil {
			t.Fatal(err)
		}
	}
	if touches != 2 || convs != 2 || costs != 2 {
		t.Fatalf("valid records in ClickHouse: touches %d conversions %d costs %d, want 2 each", touches, convs, costs)
	}

	got := readDLQ(t, e, len(bad))
	for _, b := range bad {
		found := false
		for _, d := range got {
			raw := string(d.Raw) + string(d.Payload)
			if d.SourceTopic == b.r.Topic && strings.Contains(d.Reason, b.reason) && raw == string(b.r.Value) {
				found = true
			}
			if err := schemas.Validate(schemas.KindDeadLetter, mustJSON(t, d)); err != nil {
				t.Fatalf("dead letter does not match its schema: %v", err)
			}
		}
		if !found {
			t.Errorf("no dead letter with reason containing %q for %s", b.reason, b.r.Value)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readDLQ reads n dead letters from the attribution DLQ.
func readDLQ(t *testing.T, e *env, n int) []schemas.DeadLetter {
	t.Helper()
	cl, err := kafka.NewClient(e.cfg.Kafka, e.brokers, slog.New(slog.DiscardHandler), kgo.ConsumeTopics(e.names.Topic(schemas.TopicAttrDLQ)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []schemas.DeadLetter
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d dead letters", len(out), n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var d schemas.DeadLetter
			if err := json.Unmarshal(r.Value, &d); err != nil {
				t.Fatalf("dead letter not JSON: %v", err)
			}
			out = append(out, d)
		})
	}
	return out
}
