package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LagMonitor exports the consumer lag of the platform's groups, measured with
// kadm (committed offsets against end offsets), as
// partners_kafka_consumer_lag{group, topic}: records not yet processed and
// committed. Labels are low-cardinality: groups and topics are fixed by the
// configuration.
type LagMonitor struct {
	adm    *kadm.Client
	prefix string
	every  time.Duration
	log    *slog.Logger
	gauge  *prometheus.GaugeVec
}

// NewLagMonitor returns a monitor of every consumer group whose name starts
// with prefix, its gauge registered with reg (nil: not registered).
func NewLagMonitor(cl *kgo.Client, prefix string, every time.Duration, reg prometheus.Registerer, log *slog.Logger) (*LagMonitor, error) {
	m := &LagMonitor{
		adm: kadm.NewClient(cl), prefix: prefix, every: every, log: log,
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "partners_kafka_consumer_lag",
			Help: "Records behind the end of the topic, per consumer group and topic (committed offsets vs end offsets).",
		}, []string{"group", "topic"}),
	}
	if reg != nil {
		if err := reg.Register(m.gauge); err != nil {
			return nil, fmt.Errorf("kafka lag metrics: %w", err)
		}
	}
	return m, nil
}

// Run measures until ctx ends.
func (m *LagMonitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		m.Measure(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Measure takes one measurement.
func (m *LagMonitor) Measure(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	listed, err := m.adm.ListGroups(ctx)
	if err != nil {
		m.log.Debug("consumer groups not listed", "err", err)
		return
	}
	var groups []string
	for _, g := range listed.Groups() {
		if strings.HasPrefix(g, m.prefix) {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return
	}
	lags, err := m.adm.Lag(ctx, groups...)
	if err != nil {
		m.log.Debug("consumer lag not measured", "err", err)
		return
	}
	for group, gl := range lags {
		if gl.FetchErr != nil || gl.DescribeErr != nil {
			continue
		}
		for topic, total := range gl.Lag.TotalByTopic() {
			m.gauge.WithLabelValues(group, topic).Set(float64(total.Lag))
		}
	}
}
