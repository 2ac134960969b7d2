package webhooks

import (
	"context"
	"log/slog"
	"testing"

	"github.com/partners-engine/partners-engine/internal/testenv"
)

func TestZZProfE2E(t *testing.T) {
	rcv, _ := newBenchReceiver()
	defer rcv.close()
	r, err := benchEndToEnd(context.Background(), testenv.Brokers(t), slog.New(slog.DiscardHandler), rcv, 20000, 32)
	t.Logf("e2e %.0f/s %v", r, err)
}
