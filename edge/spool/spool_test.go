package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// producer records what it acknowledges; with fail set it refuses.
type producer struct {
	mu   sync.Mutex
	got  []*kgo.Record
	fail error
}

func (p *producer) Produce(_ context.Context, r *kgo.Record, promise func(*kgo.Record, error)) {
	p.mu.Lock()
	err := p.fail
	if err == nil {
		p.got = append(p.got, r)
	}
	p.mu.Unlock()
	promise(r, err)
}

func (p *producer) setFail(err error) {
	p.mu.Lock()
	p.fail = err
	p.mu.Unlock()
}

func (p *producer) values() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]bool{}
	for _, r := range p.got {
		out[string(r.Value)] = true
	}
	return out
}

func record(i int, at time.Time) *kgo.Record {
	return &kgo.Record{Topic: "p.touchpoints.v1", Key: []byte(fmt.Sprintf("user-%d", i%7)), Value: []byte(fmt.Sprintf(`{"id":"tp_%d"}`, i)),
		Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}, Timestamp: at}
}

func open(t *testing.T, dir string, mod ...func(*Options)) *Spool {
	t.Helper()
	o := Options{Dir: dir, Name: "p.", MaxBytes: 1 << 20, SegmentBytes: 512}
	for _, m := range mod {
		m(&o)
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestReplayAfterOutage: records put while Kafka refuses stay spooled
// through failed passes (none lost, none duplicated into new segments
// beyond the refused ones), survive a close and reopen, and are produced
// whole — key, value, headers, timestamp — once Kafka takes them; then the
// spool is empty on disk.
func TestReplayAfterOutage(t *testing.T) {
	dir := t.TempDir()
	at := time.UnixMilli(1_764_000_000_123)
	s := open(t, dir)
	const n = 40
	for i := range n {
		if err := s.Put("touchpoint", record(i, at)); err != nil {
			t.Fatal(err)
		}
	}
	if len(segFiles(t, s.Dir())) < 2 {
		t.Fatalf("segments %v: 40 records of ~120 B at 512 B per segment should rotate", segFiles(t, s.Dir()))
	}
	p := &producer{}
	p.setFail(errors.New("broker down"))
	for range 3 {
		res, err := s.Replay(context.Background(), p)
		if err == nil || res.Failed == 0 {
			t.Fatalf("replay with Kafka down: %+v, %v; want an error", res, err)
		}
	}
	size := s.Size()
	if size == 0 {
		t.Fatal("the spool lost its records in failed passes")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dir) // a restart takes the same slot and its records
	defer s.Close()
	if s.Size() != size {
		t.Fatalf("reopened spool holds %d bytes, want %d", s.Size(), size)
	}
	p.setFail(nil)
	res, err := s.Replay(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed["touchpoint"] != n {
		t.Fatalf("replayed %v, want %d touchpoints", res.Replayed, n)
	}
	got := p.values()
	for i := range n {
		if !got[fmt.Sprintf(`{"id":"tp_%d"}`, i)] {
			t.Fatalf("record %d never produced", i)
		}
	}
	r := p.got[0]
	if r.Topic != "p.touchpoints.v1" || len(r.Headers) != 1 || r.Headers[0].Key != "traceparent" || !r.Timestamp.Equal(at) || len(r.Key) == 0 {
		t.Fatalf("replayed record %+v lost fields", r)
	}
	if s.Size() != 0 || len(segFiles(t, s.Dir())) != 0 {
		t.Fatalf("after replay: %d bytes, segments %v", s.Size(), segFiles(t, s.Dir()))
	}
}

// TestTornFrame: a kill -9 in the middle of a write leaves a partial last
// frame; replay produces every whole record before it and counts the
// torn one, never a garbled record.
func TestTornFrame(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, func(o *Options) { o.SegmentBytes = 1 << 20 })
	for i := range 5 {
		if err := s.Put("touchpoint", record(i, time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	seg := segFiles(t, s.Dir())[0]
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	frame := encode("touchpoint", record(99, time.Now()))
	if _, err := f.Write(frame[:len(frame)-3]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := &producer{}
	res, err := s.Replay(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed["touchpoint"] != 5 || res.Corrupt != 1 || len(p.got) != 5 {
		t.Fatalf("replay of a torn segment: %+v, %d produced; want 5 and 1 corrupt", res, len(p.got))
	}
	s.Close()
}

// TestFullAndExpired: Put refuses beyond MaxBytes; replay drops records
// older than MaxAge instead of producing them.
func TestFullAndExpired(t *testing.T) {
	now := time.Now()
	s := open(t, t.TempDir(), func(o *Options) {
		o.MaxBytes = 300
		o.MaxAge = time.Hour
		o.Now = func() time.Time { return now }
	})
	defer s.Close()
	var err error
	puts := 0
	for ; puts < 10; puts++ {
		at := now
		if puts == 0 {
			at = now.Add(-2 * time.Hour)
		}
		if err = s.Put("audit", record(puts, at)); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrFull) || puts < 2 {
		t.Fatalf("after %d puts: %v, want ErrFull", puts, err)
	}
	p := &producer{}
	res, err := s.Replay(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if res.Expired["audit"] != 1 || res.Replayed["audit"] != puts-1 {
		t.Fatalf("replay: %+v, want 1 expired and %d produced", res, puts-1)
	}
	if err := s.Put("audit", record(1, now)); err != nil {
		t.Fatalf("after replay the spool has room again: %v", err)
	}
}

// TestSlots: two processes on one directory hold a slot each; a slot
// released (its process ended) is taken by the next Open.
func TestSlots(t *testing.T) {
	dir := t.TempDir()
	a, b := open(t, dir), open(t, dir)
	if a.Dir() == b.Dir() {
		t.Fatalf("both spools use %s", a.Dir())
	}
	other := open(t, dir, func(o *Options) { o.Name = "q." })
	if filepath.Base(other.Dir()) != "q-0" {
		t.Fatalf("another topic prefix uses %s, want its own q-0", other.Dir())
	}
	other.Close()
	held := a.Dir()
	a.Close()
	c := open(t, dir)
	if c.Dir() != held {
		t.Fatalf("reopened into %s, want the released %s", c.Dir(), held)
	}
	b.Close()
	c.Close()
}
