package attribution

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/twmb/franz-go/pkg/kgo"
)

// PermanentError marks a failure that retrying the same records cannot fix
// (ClickHouse refuses their data). Handle then finds the records that cause
// it and dead-letters them, so the partition moves on.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// dataErrors are ClickHouse exception codes that mean "this data cannot be
// stored" — the same on 18.16 and current versions — as opposed to an
// unavailable, overloaded or restarting server.
var dataErrors = map[int32]bool{
	6:   true, // CANNOT_PARSE_TEXT
	27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	53:  true, // TYPE_MISMATCH
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	117: true, // INCORRECT_DATA
	131: true, // TOO_LARGE_STRING_SIZE
	321: true, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
	407: true, // DECIMAL_OVERFLOW
}

// permanent reports whether err is a failure of the data, not of the
// server: a PermanentError, a ClickHouse data error or a value clickhouse-go
// could not encode.
func permanent(err error) bool {
	var pe *PermanentError
	var ex *clickhouse.Exception
	var ce *column.ColumnConverterError
	switch {
	case errors.As(err, &pe), errors.As(err, &ce):
		return true
	case errors.As(err, &ex):
		return dataErrors[ex.Code]
	}
	return false
}

// isolate finds, by bisection, the records of recs that fail with a
// permanent error and dead-letters each with that error; every other record
// is handled as usual. Halves are taken per partition, in offset order, so
// the first half of every partition is committed before the second (the
// ledger is an end offset per partition). A failure that is not permanent
// stops it: the batch is retried (what was committed is skipped then).
func (p *Processor) isolate(ctx context.Context, recs []*kgo.Record, cause error) error {
	if len(recs) == 1 {
		r := recs[0]
		reason := fmt.Sprintf("cannot be written to ClickHouse: %v", cause)
		p.opt.Log.Warn("attribution record cannot be written; dead-lettering it", "topic", r.Topic,
			"partition", r.Partition, "offset", r.Offset, "err", cause)
		p.poison.set(posOf(r), reason)
		return p.handle(ctx, recs)
	}
	first, second := halves(recs)
	for _, part := range [][]*kgo.Record{first, second} {
		if len(part) == 0 {
			continue
		}
		err := p.handle(ctx, part)
		if err != nil && permanent(err) {
			err = p.isolate(ctx, part, err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// poisoned are the records isolate found, until their dead letters are
// committed; the workers share it.
type poisoned struct {
	mu sync.Mutex
	m  map[pos]string
}

func (p *poisoned) set(at pos, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m[at] = reason
}

func (p *poisoned) get(at pos) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.m[at]
	return r, ok
}

func (p *poisoned) done(at pos) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, at)
}

// halves splits recs into the first and second half of every partition's
// records (offset order); a partition with one record goes to the first.
func halves(recs []*kgo.Record) (first, second []*kgo.Record) {
	byTP := map[tp][]*kgo.Record{}
	var order []tp
	for _, r := range recs {
		k := tp{r.Topic, r.Partition}
		if _, ok := byTP[k]; !ok {
			order = append(order, k)
		}
		byTP[k] = append(byTP[k], r)
	}
	if len(order) > 1 && len(recs) == len(order) {
		// One record per partition: split the partitions.
		sort.Slice(order, func(i, j int) bool {
			return order[i].topic+fmt.Sprint(order[i].partition) < order[j].topic+fmt.Sprint(order[j].partition)
		})
		for i, k := range order {
			if i < len(order)/2 {
				first = append(first, byTP[k]...)
			} else {
				second = append(second, byTP[k]...)
			}
		}
		return first, second
	}
	for _, k := range order {
		rs := byTP[k]
		sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
		n := (len(rs) + 1) / 2
		first = append(first, rs[:n]...)
		second = append(second, rs[n:]...)
	}
	return first, second
}
