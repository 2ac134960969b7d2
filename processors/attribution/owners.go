package attribution

import (
	"slices"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// partitionLocks serialise the batches of one partition number (of every
// source topic: a user's touchpoints and conversions share it) between the
// workers of a process.
type partitionLocks struct {
	mu sync.Mutex
	m  map[int32]*sync.Mutex
}

// lock takes the locks of recs' partition numbers, in ascending order (two
// batches never wait for each other in a cycle), and returns their unlock.
func (l *partitionLocks) lock(recs []*kgo.Record) (unlock func()) {
	var nums []int32
	for _, r := range recs {
		if !slices.Contains(nums, r.Partition) {
			nums = append(nums, r.Partition)
		}
	}
	slices.Sort(nums)
	held := make([]*sync.Mutex, len(nums))
	l.mu.Lock()
	if l.m == nil {
		l.m = map[int32]*sync.Mutex{}
	}
	for i, n := range nums {
		if l.m[n] == nil {
			l.m[n] = &sync.Mutex{}
		}
		held[i] = l.m[n]
	}
	l.mu.Unlock()
	for _, m := range held {
		m.Lock()
	}
	return func() {
		for _, m := range slices.Backward(held) {
			m.Unlock()
		}
	}
}
