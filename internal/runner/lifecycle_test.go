package runner

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func testProcess(timeout time.Duration, comps ...component) *process {
	log := slog.New(slog.DiscardHandler)
	r := &Runner{opt: Options{Mode: Edge, ShutdownTimeout: timeout}, log: log, ready: make(chan struct{}), addrs: map[string]string{}}
	return &process{r: r, log: log, comps: comps}
}

// TestShutdownOrder: serving components stop first, followers only after
// every serving one returned (a draining processor still sees tenants).
func TestShutdownOrder(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []string
	record := func(name string) { mu.Lock(); order = append(order, name); mu.Unlock() }
	serve := func(name string, drain time.Duration) component {
		return component{name: name, run: func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(drain) // draining and committing
			record(name)
			return ctx.Err()
		}}
	}
	follow := component{name: "registry", follow: true, run: func(ctx context.Context) error {
		<-ctx.Done()
		record("registry")
		return nil
	}}
	p := testProcess(5*time.Second, follow, serve("http", 0), serve("webhooks", 50*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx) }()
	<-p.r.Ready()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(order) != 3 || order[2] != "registry" {
		t.Fatalf("stop order %v: the follower must stop last", order)
	}
}

// TestFailureStopsTheRest: the first component error stops every other
// component and is what Run returns.
func TestFailureStopsTheRest(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	stopped := make(chan struct{})
	p := testProcess(5*time.Second,
		component{name: "broken", run: func(context.Context) error { return boom }},
		component{name: "other", run: func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil }},
	)
	err := p.run(context.Background())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("got %v, want the component's error naming it", err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("the other component was not stopped")
	}
}

// TestShutdownIsBounded: a component that ignores its context does not
// hold the process: Run returns after the timeout and names it.
func TestShutdownIsBounded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	p := testProcess(100*time.Millisecond, component{name: "stuck", run: func(context.Context) error { <-release; return nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx) }()
	<-p.r.Ready()
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "stuck did not stop") {
			t.Fatalf("got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run waited for a stuck component")
	}
}
