// Package spool keeps the edge's records on local disk while Kafka cannot
// take them, and hands them back to the producer once it can: a Kafka
// outage longer than the producer's retry window, or a producer buffer
// that stays full, no longer loses touchpoints and audit records.
//
// A spool is a directory of append-only segment files. Every record is one
// frame: its length, a CRC-32C of its payload, and the payload (kind,
// topic, key, value, headers, timestamp). A frame is written with one
// write(2) before Put returns, so a record in the spool survives a kill -9
// of the process (not a power loss: segments are not fsynced per record).
// A torn last frame, left by a kill during its write, fails its CRC and is
// counted as corrupt, never replayed as garbage.
//
// Replay is at least once: a segment is removed only after every record it
// holds was acknowledged by Kafka or written again into a newer segment.
// Records carry deterministic ids (touchpoints: tp_ + hash of tenant, user
// and request id), and the attribution processor drops repeated ids.
//
// Several processes may share one directory: each takes the first free
// slot (a subdirectory holding a lock file, flock(2)), so a restarted
// process takes over the slot, and the records, of one that died.
package spool

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrFull is returned by Put when the spool holds MaxBytes.
var ErrFull = errors.New("spool full")

// ErrClosed is returned by Put after Close.
var ErrClosed = errors.New("spool closed")

// Options configure a spool.
type Options struct {
	// Dir is the parent directory; the spool uses the slot Name-0,
	// Name-1, … that no running process holds.
	Dir, Name string
	// MaxBytes bounds the segments on disk; Put beyond it fails with
	// ErrFull.
	MaxBytes int64
	// MaxAge drops records older than this (by their timestamp) at replay
	// instead of producing them; 0 keeps them until produced.
	MaxAge time.Duration
	// SegmentBytes rotates the segment written to at this size (default
	// 8 MiB).
	SegmentBytes int64
	Now          func() time.Time
}

// Spool is one slot of a spool directory.
type Spool struct {
	opt  Options
	dir  string
	lock *os.File

	mu      sync.Mutex
	closed  bool
	cur     *os.File
	curSeq  uint64
	curSize int64
	size    int64 // every segment's bytes, the current one included
}

const slots = 256

// Open takes the first free slot of opt.Dir and counts the segments a
// previous holder left there; they are replayed by Replay.
func Open(opt Options) (*Spool, error) {
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = 8 << 20
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := os.MkdirAll(opt.Dir, 0o700); err != nil {
		return nil, err
	}
	name := sanitize(opt.Name)
	for i := range slots {
		dir := filepath.Join(opt.Dir, name+"-"+strconv.Itoa(i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another process holds this slot
			}
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		s := &Spool{opt: opt, dir: dir, lock: f}
		segs, err := s.segments()
		if err != nil {
			f.Close()
			return nil, err
		}
		for _, seq := range segs {
			if fi, err := os.Stat(s.path(seq)); err == nil {
				s.size += fi.Size()
			}
			s.curSeq = max(s.curSeq, seq)
		}
		return s, nil
	}
	return nil, fmt.Errorf("%s: all %d slots are held by running processes", opt.Dir, slots)
}

// sanitize makes a topic prefix a directory name.
func sanitize(s string) string {
	s = strings.Trim(s, ".")
	if s == "" {
		return "default"
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// Dir is the slot directory in use.
func (s *Spool) Dir() string { return s.dir }

// Size is the bytes the spool holds on disk.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

func (s *Spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d.seg", seq))
}

// segments lists the segment numbers in the slot, oldest first.
func (s *Spool) segments() ([]uint64, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		if seq, err := strconv.ParseUint(n, 10, 64); err == nil {
			out = append(out, seq)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Put appends one record. It returns once the record is in the file (one
// write), ErrFull when the spool holds MaxBytes.
func (s *Spool) Put(kind string, r *kgo.Record) error {
	frame := encode(kind, r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.opt.MaxBytes > 0 && s.size+int64(len(frame)) > s.opt.MaxBytes {
		return ErrFull
	}
	if s.cur == nil || s.curSize >= s.opt.SegmentBytes {
		if err := s.rotateLocked(); err != nil {
			return err
		}
	}
	n, err := s.cur.Write(frame)
	s.curSize += int64(n)
	s.size += int64(n)
	return err
}

// rotateLocked closes the current segment and opens the next one.
func (s *Spool) rotateLocked() error {
	s.closeCurLocked()
	s.curSeq++
	f, err := os.OpenFile(s.path(s.curSeq), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.cur, s.curSize = f, 0
	return nil
}

func (s *Spool) closeCurLocked() {
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
}

// sealed closes the segment being written (when it holds anything) and
// returns every segment no longer written to, oldest first.
func (s *Spool) sealed() ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.cur != nil && s.curSize > 0 {
		s.closeCurLocked()
	}
	segs, err := s.segments()
	if err != nil {
		return nil, err
	}
	if s.cur != nil { // open and empty: still the writer's
		segs = slices.DeleteFunc(segs, func(q uint64) bool { return q == s.curSeq })
	}
	return segs, nil
}

// Producer produces one record and calls promise with the outcome
// (kgo.Client implements it).
type Producer interface {
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
}

// Result is what one replay pass did.
type Result struct {
	Replayed map[string]int // kind → records Kafka acknowledged
	Expired  map[string]int // kind → records older than MaxAge, dropped
	Corrupt  int            // frames that failed their CRC or were torn
	Failed   int            // records Kafka refused, written again
}

// Replay produces every record of the sealed segments, oldest segment
// first, and removes each segment once its records are acknowledged;
// records Kafka refuses are written again into the current segment for the
// next pass. It stops at the first segment with a refused record (Kafka is
// likely still down) and returns an error then.
func (s *Spool) Replay(ctx context.Context, p Producer) (Result, error) {
	res := Result{Replayed: map[string]int{}, Expired: map[string]int{}}
	segs, err := s.sealed()
	if err != nil {
		return res, err
	}
	for _, seq := range segs {
		if err := s.replaySegment(ctx, p, seq, &res); err != nil {
			return res, err
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	return res, nil
}

type entry struct {
	kind string
	rec  *kgo.Record
}

func (s *Spool) replaySegment(ctx context.Context, p Producer, seq uint64, res *Result) error {
	path := s.path(seq)
	ents, size, corrupt, err := readSegment(path)
	if err != nil {
		return err
	}
	res.Corrupt += corrupt
	now := s.opt.Now()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []entry
		first  error
	)
	for _, e := range ents {
		if s.opt.MaxAge > 0 && !e.rec.Timestamp.IsZero() && now.Sub(e.rec.Timestamp) > s.opt.MaxAge {
			res.Expired[e.kind]++
			continue
		}
		wg.Add(1)
		p.Produce(ctx, e.rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, e)
				if first == nil {
					first = err
				}
				return
			}
			res.Replayed[e.kind]++
		})
	}
	wg.Wait()
	// The refused records go into the current segment before this one is
	// removed: a crash in between replays them twice, never zero times.
	for _, e := range failed {
		if err := s.Put(e.kind, fresh(e.rec)); err != nil {
			return fmt.Errorf("re-spool: %w (segment %s kept)", err, path)
		}
	}
	res.Failed += len(failed)
	if err := os.Remove(path); err != nil {
		return err
	}
	s.mu.Lock()
	s.size -= size
	s.mu.Unlock()
	if first != nil {
		return fmt.Errorf("%d of %d spooled records not produced: %w", len(failed), len(ents), first)
	}
	return nil
}

// fresh copies what a spooled record is made of into a record never
// handed to a producer.
func fresh(r *kgo.Record) *kgo.Record {
	return &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
}

// Run replays every interval until ctx ends; after a failed pass it waits
// twice as long, up to maxWait. done is called after each pass.
func (s *Spool) Run(ctx context.Context, p Producer, interval, maxWait time.Duration, done func(Result, error)) {
	wait := interval
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		res, err := s.Replay(ctx, p)
		if errors.Is(err, ErrClosed) {
			return
		}
		if done != nil {
			done(res, err)
		}
		if err != nil {
			wait = min(2*wait, maxWait)
		} else {
			wait = interval
		}
	}
}

// Close closes the current segment and releases the slot; what the spool
// holds stays on disk for the next holder.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cur != nil && s.curSize == 0 {
		_ = os.Remove(s.path(s.curSeq)) // opened, never written
	}
	s.closeCurLocked()
	return s.lock.Close()
}

// Frame layout: u32 payload length, u32 CRC-32C of the payload, payload.
// Payload: kind, topic, key, value (uvarint length + bytes each),
// timestamp (varint Unix ms), header count (uvarint), then each header's
// key and value (uvarint length + bytes).

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func encode(kind string, r *kgo.Record) []byte {
	n := 8 + 5*binary.MaxVarintLen64 + len(kind) + len(r.Topic) + len(r.Key) + len(r.Value) + binary.MaxVarintLen64
	for _, h := range r.Headers {
		n += 2*binary.MaxVarintLen64 + len(h.Key) + len(h.Value)
	}
	b := make([]byte, 8, n)
	b = appendBytes(b, []byte(kind))
	b = appendBytes(b, []byte(r.Topic))
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = binary.AppendVarint(b, r.Timestamp.UnixMilli())
	b = binary.AppendUvarint(b, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		b = appendBytes(b, []byte(h.Key))
		b = appendBytes(b, h.Value)
	}
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(b)-8))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(b[8:], crcTable))
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// maxFrame bounds a frame's length field: a larger one is corruption.
const maxFrame = 64 << 20

// readSegment decodes a segment's frames up to the first bad one.
func readSegment(path string) (out []entry, size int64, corrupt int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	br := bufio.NewReaderSize(f, 1<<16)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err != io.EOF {
				corrupt++ // a torn header
			}
			return out, size, corrupt, nil
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		if n > maxFrame {
			return out, size, corrupt + 1, nil
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil || crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return out, size, corrupt + 1, nil
		}
		e, ok := decode(payload)
		if !ok {
			return out, size, corrupt + 1, nil
		}
		out = append(out, e)
	}
}

func decode(b []byte) (entry, bool) {
	d := decoder{b: b}
	kind := string(d.bytes())
	r := &kgo.Record{Topic: string(d.bytes()), Key: d.bytes(), Value: d.bytes()}
	ms := d.varint()
	r.Timestamp = time.UnixMilli(ms)
	nh := d.uvarint()
	if d.bad || nh > uint64(len(b)) {
		return entry{}, false
	}
	for range nh {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: string(d.bytes()), Value: d.bytes()})
	}
	if d.bad || len(d.b) != 0 {
		return entry{}, false
	}
	return entry{kind: kind, rec: r}, true
}

type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}
