// Package kafka owns the Kafka plumbing shared by every component: Cluster
// (how a component reaches the brokers: its section, the brokers, client
// construction with an idempotent producer, kslog logging and kotel tracing
// on an injected provider, topic and group names), topic bootstrap with
// kadm (Specs, EnsureTopics), the embedded kfake broker for `partners dev`,
// the consumer loop that commits offsets only after the work is done, with
// permanent failures dead-lettered and retryable ones retried without
// holding a rebalance (consume.go), the transactional consume-produce stage
// with pipelined, out-of-order work and exactly-once moves (stage.go), the
// consumer-lag monitor, and W3C trace context in record headers.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kotel"
	"github.com/twmb/franz-go/plugin/kslog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/schemas"
)

// Names resolves logical topic names (schemas.Topic*) to the names on the
// broker, applying kafka.topic_prefix so tests can run in isolation.
type Names struct{ Prefix string }

// Topic returns the broker name of a logical topic.
func (n Names) Topic(logical string) string { return n.Prefix + logical }

// Retry returns the broker name of retry topic n (1-based).
func (n Names) Retry(i int) string { return n.Prefix + schemas.TopicRetryPrefix + strconv.Itoa(i) }

// Group returns a consumer group name for a component.
func (n Names) Group(prefix, component string) string {
	return n.Prefix + prefix + "." + component
}

// TopicSpec is a topic the platform needs.
type TopicSpec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

func ptr(s string) *string { return &s }

// Specs lists every topic the configuration needs, with cleanup policies and
// retention as in DESIGN.md: the kafka section names and sizes them (and
// sets min.insync.replicas when kafka.min_insync_replicas is set), the
// webhooks section says how many retry topics there are and how long the
// DLQ keeps its records.
func Specs(k config.Kafka, w config.Webhooks) []TopicSpec {
	n := Names{Prefix: k.TopicPrefix}
	p := int32(k.Partitions)
	// conf is a topic's configs plus kafka.min_insync_replicas (when set).
	conf := func(kv ...string) map[string]*string {
		m := map[string]*string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = ptr(kv[i+1])
		}
		if k.MinInsyncReplicas > 0 {
			m["min.insync.replicas"] = ptr(strconv.Itoa(k.MinInsyncReplicas))
		}
		return m
	}
	del := conf("cleanup.policy", "delete")
	specs := []TopicSpec{
		{Name: n.Topic(schemas.TopicTenants), Partitions: p, Configs: conf("cleanup.policy", "compact", "min.compaction.lag.ms", "0")},
		{Name: n.Topic(schemas.TopicEvents), Partitions: p, Configs: del},
		{Name: n.Topic(schemas.TopicDeliveries), Partitions: p, Configs: del},
		{Name: n.Topic(schemas.TopicTouchpoints), Partitions: p, Configs: del},
		{Name: n.Topic(schemas.TopicConversions), Partitions: p, Configs: del},
		{Name: n.Topic(schemas.TopicCosts), Partitions: p, Configs: del},
		{Name: n.Topic(schemas.TopicAttrDLQ), Partitions: p, Configs: del},
		// Every process reading the tenants topic reports the same
		// undecodable record under the same key (registry.WithDeadLetters).
		{Name: n.Topic(schemas.TopicTenantsDLQ), Partitions: p, Configs: conf("cleanup.policy", "compact")},
		{Name: n.Topic(schemas.TopicAudit), Partitions: p, Configs: del},
	}
	retention := strconv.FormatInt(w.DLQ.Retention.Milliseconds(), 10)
	specs = append(specs, TopicSpec{Name: n.Topic(schemas.TopicDLQ), Partitions: p, Configs: conf("cleanup.policy", "delete", "retention.ms", retention)})
	// The DLQ index keeps the latest state of every dead letter; entries
	// older than the DLQ's retention go with it.
	specs = append(specs, TopicSpec{Name: n.Topic(schemas.TopicDLQIndex), Partitions: p,
		Configs: conf("cleanup.policy", "compact,delete", "retention.ms", retention, "min.compaction.lag.ms", "0")})
	specs = append(specs, TopicSpec{Name: n.Topic(schemas.TopicFIFO), Partitions: p, Configs: del})
	// At least one retry topic: held deliveries wait there even with
	// max_attempts 1.
	for i := 1; i < max(w.Retry.MaxAttempts, 2); i++ {
		specs = append(specs, TopicSpec{Name: n.Retry(i), Partitions: p, Configs: del})
	}
	return specs
}

// EnsureTopics creates every missing topic of Specs(k, w) with k's
// replication factor and min.insync.replicas. Existing topics are left as they are (partition
// counts are never changed behind an operator's back).
func EnsureTopics(ctx context.Context, cl *kgo.Client, k config.Kafka, w config.Webhooks) error {
	adm := kadm.NewClient(cl)
	repl := int16(k.Replication)
	var names []string
	for _, s := range Specs(k, w) {
		res, err := adm.CreateTopic(ctx, s.Partitions, repl, s.Configs, s.Name)
		if err == nil {
			err = res.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", s.Name, err)
		}
		names = append(names, s.Name)
	}
	return waitTopics(ctx, cl, names)
}

func topicName(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// waitTopics returns once a broker's metadata has every topic with a leader
// for each partition. The controller acknowledges a creation before the
// brokers apply it; until then produce, describe and fetch answer
// UNKNOWN_TOPIC_OR_PARTITION.
func waitTopics(ctx context.Context, cl *kgo.Client, names []string) error {
	req := kmsg.NewPtrMetadataRequest()
	for _, name := range names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	for {
		resp, err := req.RequestWith(ctx, cl)
		missing := ""
		if err != nil {
			missing = err.Error()
		} else {
			for _, t := range resp.Topics {
				if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
					missing = fmt.Sprintf("%s: %v", topicName(t.Topic), err)
					break
				}
				for _, p := range t.Partitions {
					if p.Leader < 0 {
						missing = fmt.Sprintf("%s/%d has no leader", topicName(t.Topic), p.Partition)
					}
				}
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics not ready: %s: %w", missing, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Cluster is how a component reaches Kafka: the kafka section (client id,
// topic and group prefixes), the brokers (kafka.brokers, or the embedded
// broker's addresses), the logger of its clients and the tracer provider
// their records are traced with. Components receive a Cluster, never the
// whole configuration.
type Cluster struct {
	Config  config.Kafka
	Brokers []string
	Log     *slog.Logger
	// Tracer traces produced and consumed records (kotel); nil: the
	// global provider. Tests inject their own to stay isolated.
	Tracer trace.TracerProvider
}

// Names resolves logical topic names with the cluster's topic prefix.
func (c Cluster) Names() Names { return Names{Prefix: c.Config.TopicPrefix} }

// Topic returns the broker name of a logical topic.
func (c Cluster) Topic(logical string) string { return c.Names().Topic(logical) }

// Group returns the consumer group of a component.
func (c Cluster) Group(component string) string {
	return c.Names().Group(c.Config.GroupPrefix, component)
}

// Opts returns the client options every component uses: brokers, client
// id, slog logging, kotel tracing, an idempotent producer that waits for
// all in-sync replicas, and kafka.tls / kafka.sasl.
func (c Cluster) Opts() []kgo.Opt {
	tp := c.Tracer
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var hooks []kgo.Hook
	if _, off := tp.(noop.TracerProvider); !off {
		// A no-op provider records nothing: skip kotel's per-record work.
		tracer := kotel.NewTracer(kotel.TracerProvider(tp),
			kotel.TracerPropagator(propagation.TraceContext{}), kotel.LinkSpans())
		hooks = kotel.NewKotel(kotel.WithTracer(tracer)).Hooks()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.Config.ClientID),
		kgo.WithLogger(kslog.New(clientLogger(log))),
		kgo.WithHooks(hooks...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.RecordRetries(10),
		kgo.RetryTimeout(30 * time.Second),
		kgo.ProduceRequestTimeout(10 * time.Second),
		kgo.DefaultProduceTopic(""),
	}
	return append(opts, c.securityOpts()...)
}

// securityOpts are the TLS and SASL options of kafka.tls and kafka.sasl.
// A TLS setup that cannot be loaded (a CA file gone since the config was
// checked) makes every dial fail with its error; NewClient reports it at
// once.
func (c Cluster) securityOpts() []kgo.Opt {
	var opts []kgo.Opt
	if c.Config.TLS.Enabled {
		tc, err := TLSConfig(c.Config.TLS)
		if err != nil {
			opts = append(opts, kgo.Dialer(func(context.Context, string, string) (net.Conn, error) { return nil, err }))
		} else {
			opts = append(opts, kgo.DialTLSConfig(tc))
		}
	}
	switch s := c.Config.SASL; s.Mechanism {
	case config.SASLScramSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()))
	case config.SASLScramSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()))
	case config.SASLPlain:
		opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()))
	}
	return opts
}

// TLSConfig is the client TLS configuration of kafka.tls: the CA bundle (or
// the system roots), an optional client certificate, TLS 1.2 at least.
func TLSConfig(t config.KafkaTLS) (*tls.Config, error) {
	// InsecureSkipVerify is refused outside `partners dev` (config.DevOnly).
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls.ca_file %s: no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka.tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// NewClient builds a client on the cluster with Opts plus extra options.
func (c Cluster) NewClient(extra ...kgo.Opt) (*kgo.Client, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("kafka: no brokers (start the embedded broker or set kafka.brokers)")
	}
	if c.Config.TLS.Enabled {
		if _, err := TLSConfig(c.Config.TLS); err != nil {
			return nil, err
		}
	}
	cl, err := kgo.NewClient(append(c.Opts(), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// NewClient is Cluster{Config: k, Brokers: brokers, Log: log}.NewClient:
// a client traced with the global provider, for tools and tests.
func NewClient(k config.Kafka, brokers []string, log *slog.Logger, extra ...kgo.Opt) (*kgo.Client, error) {
	return Cluster{Config: k, Brokers: brokers, Log: log}.NewClient(extra...)
}

// Embedded is the in-process kfake broker used by `partners dev` and the
// fast tests. With a data dir its state survives restarts.
type Embedded struct {
	cluster *kfake.Cluster
}

// StartEmbedded starts kfake on 127.0.0.1:port (0: any port) persisting to
// dataDir ("" keeps everything in memory).
func StartEmbedded(dataDir string, port int, log *slog.Logger) (*Embedded, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DefaultNumPartitions(3),
		kfake.WithLogger(kfakeLogger{log: log.With("component", "kfake")})}
	if port > 0 {
		opts = append(opts, kfake.Ports(port))
	}
	if dataDir != "" {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("embedded broker data dir: %w", err)
		}
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &Embedded{cluster: c}, nil
}

// Addrs returns the broker addresses.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Close stops the broker, flushing its data dir.
func (e *Embedded) Close() { e.cluster.Close() }

type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	if level > kfake.LogLevelWarn || level == kfake.LogLevelNone {
		return
	}
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(msg, args...)))
}

// Propagator is the W3C trace context propagator used in record headers.
var Propagator = propagation.TraceContext{}

// Inject writes the span context of ctx into the record's headers.
func Inject(ctx context.Context, r *kgo.Record) {
	Propagator.Inject(ctx, kotel.NewRecordCarrier(r))
}

// Extract returns ctx carrying the remote span context of the record's headers.
func Extract(ctx context.Context, r *kgo.Record) context.Context {
	return Propagator.Extract(ctx, kotel.NewRecordCarrier(r))
}

// Header returns the value of the first header named key.
func Header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// SetHeader replaces or adds a header.
func SetHeader(r *kgo.Record, key, value string) {
	for i, h := range r.Headers {
		if h.Key == key {
			r.Headers[i].Value = []byte(value)
			return
		}
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

// quiet drops records below min: franz-go logs every metadata refresh and
// assignment at info, which drowns the platform's own logs.
type quiet struct {
	slog.Handler
	min slog.Level
}

func (q quiet) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= q.min && q.Handler.Enabled(ctx, l)
}

func (q quiet) WithAttrs(as []slog.Attr) slog.Handler {
	return quiet{Handler: q.Handler.WithAttrs(as), min: q.min}
}

func (q quiet) WithGroup(name string) slog.Handler {
	return quiet{Handler: q.Handler.WithGroup(name), min: q.min}
}

// clientLogger is the franz-go logger: warnings and errors only, unless the
// process runs at debug level.
func clientLogger(log *slog.Logger) *slog.Logger {
	min := slog.LevelWarn
	if log.Enabled(context.Background(), slog.LevelDebug) {
		min = slog.LevelDebug
	}
	return slog.New(quiet{Handler: log.Handler(), min: min}).With("component", "kafka")
}
