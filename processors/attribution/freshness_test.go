package attribution_test

import (
	"context"
	"testing"
	"time"
)

// TestFreshness: a conversion reaches the ROI numbers within the batch
// linger, not after a refresh interval. The figures are logged (no
// wall-clock assertion); the test fails if any conversion never shows up.
func TestFreshness(t *testing.T) {
	e := newEnv(t)
	e.start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	samples, err := Freshness(ctx, e.cl, e.conn, e.names, 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("freshness produce → visible in ROI over %d samples (batch linger %v): p50 %v, p99 %v, max %v",
		len(samples), e.cfg.Partner.Attribution.Batch.Linger,
		Percentile(samples, 50).Round(time.Millisecond), Percentile(samples, 99).Round(time.Millisecond),
		samples[len(samples)-1].Round(time.Millisecond))
}
