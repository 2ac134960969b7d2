package webhooks

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/schemas"
)

// TestDeliveryLogReasonAndPoison: the delivery log in ClickHouse carries
// each failed attempt's typed reason, and records on partners.deliveries.v1
// that are not attempts (not JSON, no id) are dead-lettered with the reason
// malformed_record and their position, while the attempts behind them are
// written.
func TestDeliveryLogReasonAndPoison(t *testing.T) {
	e := newEnv(t, true, nil)
	rc := newReceiver(t, func(n int) (int, map[string]string, bool) {
		if n == 1 {
			return 503, nil, false
		}
		return 200, nil, false
	})
	c := e.tenant("t-sink-reason", rc)
	deliveries := e.topic(schemas.TopicDeliveries)
	e.publishRaw(
		&kgo.Record{Topic: deliveries, Key: []byte("poison-1"), Value: []byte(`{"id": "msg_x/1", "attempt": `)},
		&kgo.Record{Topic: deliveries, Key: []byte("poison-2"), Value: []byte(`{"schema_version":"1","outcome":"delivered"}`)},
	)
	p := e.start()
	e.publish(e.event("evt_sink_reason", "order.created", `{}`))

	type row struct {
		attempt        uint16
		outcome        string
		status         uint16
		reason, errTxt string
	}
	var rows []row
	testenv.Eventually(t, 60*time.Second, "both attempts in webhook_deliveries", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rs, err := e.ch.Query(ctx, `SELECT attempt, outcome, status_code, reason, error FROM webhook_deliveries
WHERE tenant_id = ? ORDER BY attempt LIMIT 1 BY id`, c.Tenant.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		rows = rows[:0]
		for rs.Next() {
			var r row
			if err := rs.Scan(&r.attempt, &r.outcome, &r.status, &r.reason, &r.errTxt); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
		return len(rows) == 2
	})
	if r := rows[0]; r.status != 503 || r.reason != string(ReasonHTTPStatus) || r.outcome == "delivered" {
		t.Errorf("first attempt: %+v, want a failed attempt with status 503 and reason %s", r, ReasonHTTPStatus)
	}
	if r := rows[1]; r.outcome != "delivered" || r.reason != "" {
		t.Errorf("second attempt: %+v, want delivered with no reason", r)
	}

	var dls []schemas.DeadLetter
	testenv.Eventually(t, 30*time.Second, "2 dead letters of the delivery log's poison", func() bool {
		dls = e.deadLetters()
		return len(dls) == 2
	})
	offsets := map[[2]int64]bool{}
	for _, dl := range dls {
		if dl.ReasonCode != string(ReasonMalformedRecord) || dl.SourceTopic != deliveries || !strings.HasPrefix(dl.Reason, "not a delivery attempt") {
			t.Errorf("dead letter %+v: want reason malformed_record from %s", dl, deliveries)
		}
		if len(dl.Raw) == 0 && len(dl.Payload) == 0 {
			t.Errorf("dead letter keeps no input: %+v", dl)
		}
		if dl.SourceOffset == nil || dl.SourcePartition == nil {
			t.Errorf("dead letter without its position: %+v", dl)
		} else {
			offsets[[2]int64{int64(*dl.SourcePartition), *dl.SourceOffset}] = true
		}
	}
	if len(offsets) != 2 {
		t.Errorf("dead letters at (partition, offset) %v, want two different records", offsets)
	}
	// The DLQ lists them (the index), as an operator sees them.
	testenv.Eventually(t, 30*time.Second, "the DLQ index lists the poison", func() bool {
		es, _, err := p.ListDLQ(context.Background(), DLQFilter{Reason: string(ReasonMalformedRecord)})
		return err == nil && len(es) == 2
	})
	b, _ := json.Marshal(dls[0])
	if strings.Contains(string(b), `"tenant_id":"`+c.Tenant.ID) {
		t.Errorf("a poison record's dead letter names a tenant it cannot know: %s", b)
	}
}
