package webhooks

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// commands runs the side effects outcomes ask for (disabling an endpoint
// that answered 410 Gone) on its own goroutine, so a lane never waits on the
// registry. A command is best effort: if it is lost (a full queue, a crash)
// the endpoint answers 410 again and the command is issued again; until
// the registry applies it, deliveries to the endpoint keep being
// dead-lettered with the 410.
type commands struct {
	disabler Disabler
	log      *slog.Logger
	ch       chan disableCmd
	mu       sync.Mutex
	pending  map[string]bool // endpoint ids with a command queued or running
}

type disableCmd struct{ tenantID, endpointID, reason string }

func newCommands(d Disabler, log *slog.Logger) *commands {
	return &commands{disabler: d, log: log, ch: make(chan disableCmd, 1024), pending: map[string]bool{}}
}

// disable asks for an endpoint to be disabled; it never blocks.
func (c *commands) disable(tenantID, endpointID, reason string) {
	if c.disabler == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[endpointID] {
		return
	}
	select {
	case c.ch <- disableCmd{tenantID, endpointID, reason}:
		c.pending[endpointID] = true
	default:
		c.log.Warn("command queue full; endpoint not disabled now (the next 410 asks again)", "endpoint_id", endpointID)
	}
}

// Run executes commands until ctx ends.
func (c *commands) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case cmd := <-c.ch:
			c.log.Warn("endpoint answered 410 Gone; disabling it", "tenant_id", cmd.tenantID, "endpoint_id", cmd.endpointID)
			dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			if _, err := c.disabler.DisableEndpoint(dctx, cmd.tenantID, cmd.endpointID, cmd.reason); err != nil {
				c.log.Error("disable endpoint failed", "endpoint_id", cmd.endpointID, "err", err)
			}
			cancel()
			c.mu.Lock()
			delete(c.pending, cmd.endpointID)
			c.mu.Unlock()
		}
	}
}
