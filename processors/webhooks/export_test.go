package webhooks

import "log/slog"

// Test access to the processor's internals.

// breakerState is the state of an endpoint's circuit breaker.
func (p *Processor) breakerState(endpointID string) string {
	return p.gates.get(endpointID).stateAt().String()
}

// tracked is the number of endpoints with breaker state and lanes, and of
// tenants with slots, in memory.
func (p *Processor) tracked() (gates, lanes, tenants int) {
	l, t := p.bulk.sizes()
	return p.gates.len(), l, t
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
