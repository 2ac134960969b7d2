package attribution_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/partners-engine/partners-engine/internal/benchtest"
	"github.com/partners-engine/partners-engine/internal/chdb"
	"github.com/partners-engine/partners-engine/internal/config"
	"github.com/partners-engine/partners-engine/internal/kafka"
	"github.com/partners-engine/partners-engine/internal/testenv"
	"github.com/partners-engine/partners-engine/processors/attribution"
	"github.com/partners-engine/partners-engine/processors/attribution/models"
	"github.com/partners-engine/partners-engine/processors/attribution/roi"
	"github.com/partners-engine/partners-engine/schemas/chsql"
)

// The attribution figures of `make bench` (BenchmarkFigures):
//
//   - ingest: records/s from Kafka into ClickHouse through the processor
//     (decode, validate, attribute under 5 models, insert raw and attribution
//     rows, commit), beside a raw clickhouse-go batch insert of exactly the
//     rows the processor wrote, in the same run; then the same after
//     seeding as many touchpoints as the ROI queries' attribution rows
//     (10 M) into the history tables, so every batch's history read
//     meets a realistic table;
//   - ROI query latency from the rollups beside the same figures computed
//     from the raw tables (de-duplicated by id), over ≥ 10 M attribution rows
//     generated on the server with INSERT … SELECT FROM numbers();
//   - freshness p50/p99, produce → visible in the ROI numbers, beside the
//     configured batch linger.
func BenchmarkFigures(b *testing.B) {
	records, queryRows := 800_000, 10_000_000
	if benchtest.Quick() {
		records, queryRows = 20_000, 200_000
	}
	testenv.ClickHouse(b, testenv.Config(b)) // skips without a ClickHouse
	figs, err := figures(context.Background(), testenv.ClickHouseAddr(), testenv.Brokers(b), records, queryRows)
	if err != nil {
		b.Fatal(err)
	}
	benchtest.Report(b, figs...)
}

// TestBenchQuick runs the figures' measurements at small sizes so they
// cannot rot: eight figures with their baselines, and the rollups agree
// with the raw tables (figures checks that).
func TestBenchQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the benchmark measurements")
	}
	testenv.ClickHouse(t, testenv.Config(t)) // skips without a ClickHouse
	figs, err := figures(context.Background(), testenv.ClickHouseAddr(), testenv.Brokers(t), 20_000, 200_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 8 {
		t.Fatalf("want 8 figures, got %d", len(figs))
	}
	for _, f := range figs {
		if f.Value <= 0 || f.BaselineValue <= 0 {
			t.Errorf("figure without a measurement: %+v", f)
		}
	}
}

func benchROI(b *testing.B, src roi.Source) {
	cfg := testenv.Config(b)
	conn := testenv.ClickHouse(b, cfg)
	if err := SeedSynthetic(context.Background(), conn, 200_000, time.Time{}); err != nil {
		b.Fatal(err)
	}
	q := roi.Query{Model: "last_touch", Window: 30}
	b.ResetTimer()
	for b.Loop() {
		if _, err := roi.Load(context.Background(), conn, q, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkROIRollups(b *testing.B) { benchROI(b, roi.Rollups) }
func BenchmarkROIRaw(b *testing.B)     { benchROI(b, roi.Raw) }

// figures measures the eight figures on the brokers and a fresh ClickHouse
// database at clickhouseAddr.
func figures(ctx context.Context, clickhouseAddr string, brokers []string, records, queryRows int) ([]benchtest.Figure, error) {
	log := slog.New(slog.DiscardHandler)
	cfg := config.Default()
	id := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffff)
	cfg.Kafka.TopicPrefix = "bench" + id + "."
	cfg.ClickHouse.Addr = []string{clickhouseAddr}
	cfg.ClickHouse.Database = "partners_bench_" + id
	cfg.Partner.Keys.Pepper = "bench-pepper-0123456789"
	cfg.Admin.Token = "bench-admin-token"
	// Every ingest round spans several batches of every worker, so the
	// time between a round's first commit and its last measures batches
	// (the configured 20,000 at full size; smaller at quick sizes).
	cfg.Partner.Attribution.Batch.Size = max(100, min(cfg.Partner.Attribution.Batch.Size, records/ingestRounds/4))

	cl, err := kafka.NewClient(cfg.Kafka, brokers, log, kgo.ProducerBatchMaxBytes(4<<20))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := kafka.EnsureTopics(ctx, cl, cfg.Kafka, cfg.Partner.Webhooks); err != nil {
		return nil, err
	}
	defer func() {
		var names []string
		for _, s := range kafka.Specs(cfg.Kafka, cfg.Partner.Webhooks) {
			names = append(names, s.Name)
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(cl).DeleteTopics(dctx, names...)
	}()
	conn, err := openBenchDB(ctx, cfg.ClickHouse, log)
	if err != nil {
		return nil, err
	}
	defer dropBenchDB(ctx, conn, cfg.ClickHouse)

	var rows []benchtest.Figure
	ingest, err := benchIngest(ctx, &cfg, brokers, cl, conn, log, records, queryRows)
	if err != nil {
		return rows, fmt.Errorf("ingest: %w", err)
	}
	rows = append(rows, ingest...)

	p, err := attribution.New(attribution.Options{Config: cfg.Partner.Attribution, Kafka: kafka.Cluster{Config: cfg.Kafka, Brokers: brokers, Log: log}, Conn: conn, Producer: cl, Log: log})
	if err != nil {
		return rows, err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	nfresh := 100 // p99 is the 99th of 100, not the maximum of a few
	if records < 100_000 {
		nfresh = 20 // quick sizes
	}
	samples, ferr := Freshness(ctx, cl, conn, kafka.Names{Prefix: cfg.Kafka.TopicPrefix}, nfresh)
	cancel()
	<-done
	if ferr != nil {
		return rows, fmt.Errorf("freshness: %w", ferr)
	}
	linger := float64(cfg.Partner.Attribution.Batch.Linger.Milliseconds())
	rows = append(rows,
		benchtest.Figure{Name: "freshness p50 (produce → in ROI)", Value: ms(Percentile(samples, 50)), Unit: "ms", Baseline: "batch linger", BaselineValue: linger},
		benchtest.Figure{Name: "freshness p99 (produce → in ROI)", Value: ms(Percentile(samples, 99)), Unit: "ms", Baseline: "batch linger", BaselineValue: linger})

	q, err := benchQueries(ctx, cfg.ClickHouse, log, queryRows)
	if err != nil {
		return rows, fmt.Errorf("queries: %w", err)
	}
	return append(rows, q...), nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func openBenchDB(ctx context.Context, c config.ClickHouse, log *slog.Logger) (driver.Conn, error) {
	conn, err := chdb.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	if _, err := chdb.Migrate(ctx, conn, log, chdb.For(c)); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func dropBenchDB(ctx context.Context, conn driver.Conn, c config.ClickHouse) {
	conn.Close()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	_ = chdb.DropDatabase(dctx, c)
}

// ingestRounds is how many times benchIngest alternates the processor and
// the baseline: the machine's load drifts, so the figure is the round whose
// ratio is the median.
const ingestRounds = 5

// benchIngest measures, in ingestRounds alternating rounds, the processor
// and a raw clickhouse-go insert of the very rows it wrote. Each round
// publishes a generated dataset of about n/ingestRounds records (ids with a
// prefix of their own) while the processor is stopped, times the processor
// through that backlog — records committed between its first commit and
// its last, so the group join and the produce are not part of the figure —
// and then inserts the round's rows (read back by that prefix) into a
// second database with plain clickhouse-go batches of the configured size.
func benchIngest(ctx context.Context, cfg *config.Config, brokers []string, cl *kgo.Client, conn driver.Conn, log *slog.Logger, n, history int) ([]benchtest.Figure, error) {
	names := kafka.Names{Prefix: cfg.Kafka.TopicPrefix}
	adm := kadm.NewClient(cl)
	// With a backlog every batch fills to its size at once, and the linger
	// only holds each worker's last batch of a round: idle time at the end
	// of a finite backlog (a live stream has no end), not ingest work, and
	// 1 s of a round of about 2 s. The rounds run with a short linger so
	// that wait does not dilute the figure; the freshness figures run with
	// the configured one.
	acfg := cfg.Partner.Attribution
	acfg.Batch.Linger = 50 * time.Millisecond
	run := func() (stop func(), p *attribution.Processor, err error) {
		p, err = attribution.New(attribution.Options{Config: acfg, Kafka: kafka.Cluster{Config: cfg.Kafka, Brokers: brokers, Log: log}, Conn: conn, Producer: cl, Log: log})
		if err != nil {
			return nil, nil, err
		}
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Run(pctx) }()
		return func() { cancel(); <-done }, p, nil
	}
	// committed returns the records the group committed so far, and whether
	// that is all of them.
	committed := func(p *attribution.Processor) (int64, bool, error) {
		ends, err := adm.ListEndOffsets(ctx, p.Topics()...)
		if err != nil {
			return 0, false, err
		}
		offs, err := adm.FetchOffsets(ctx, p.Group())
		if err != nil {
			return 0, false, nil // group not created yet
		}
		var sum int64
		all := true
		ends.Each(func(o kadm.ListedOffset) {
			c, found := offs.Lookup(o.Topic, o.Partition)
			if found {
				sum += c.At
			}
			if o.Offset > 0 && (!found || c.At < o.Offset) {
				all = false
			}
		})
		return sum, all, nil
	}
	poll := func(p *attribution.Processor, cond func(int64, bool) bool) (int64, time.Time, error) {
		for {
			n, all, err := committed(p)
			if err != nil {
				return 0, time.Time{}, err
			}
			if cond(n, all) {
				return n, time.Now(), nil
			}
			select {
			case <-ctx.Done():
				return 0, time.Time{}, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	base := cfg.ClickHouse
	base.Database += "_raw"
	bconn, err := openBenchDB(ctx, base, log)
	if err != nil {
		return nil, err
	}
	defer dropBenchDB(ctx, bconn, base)
	size := cfg.Partner.Attribution.Batch.Size

	// Warm-up: the group exists and one batch went through.
	stop, p, err := run()
	if err != nil {
		return nil, err
	}
	warm := Generate(GenOptions{Seed: 2, Now: time.Now().UTC(), Days: 1, Partners: 1, Users: 1, MaxTouches: 1, MaxConvs: 1, CostsPer: 1, IDPrefix: "warm-"})
	wrecs, err := warm.Records(names)
	if err == nil {
		err = cl.ProduceSync(ctx, wrecs...).FirstErr()
	}
	var done int64
	if err == nil {
		done, _, err = poll(p, func(_ int64, all bool) bool { return all })
	}
	stop()
	if err != nil {
		return nil, err
	}
	type round struct{ proc, base float64 } // records/s
	var records, attrRows int
	// measure runs round rnd: it publishes the round's dataset, times the
	// processor through it, then the baseline on the same rows.
	measure := func(rnd int) (round, error) {
		prefix := fmt.Sprintf("r%d-", rnd)
		d := Generate(GenOptions{Seed: uint64(10 + rnd), Now: time.Now().UTC(), Days: 60, Partners: 20, Users: n / 4 / ingestRounds,
			MaxTouches: 4, MaxConvs: 2, RefundRate: 0.1, CostsPer: 50 / ingestRounds, IDPrefix: prefix})
		recs, err := d.Records(names)
		if err != nil {
			return round{}, err
		}
		records += d.Len()
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return round{}, err
		}
		// The processor on the round's backlog, from its first commit to
		// its last.
		stop, p, err := run()
		if err != nil {
			return round{}, err
		}
		first, t1, err := poll(p, func(n int64, _ bool) bool { return n > done })
		var last int64
		var t2 time.Time
		if err == nil {
			last, t2, err = poll(p, func(_ int64, all bool) bool { return all })
		}
		stop()
		if err != nil {
			return round{}, err
		}
		done = last
		var r round
		r.proc = float64(last-first) / t2.Sub(t1).Seconds()

		// The baseline: the round's rows, straight from Go memory.
		tables, err := readBack(ctx, conn, prefix)
		if err != nil {
			return round{}, err
		}
		t0 := time.Now()
		for _, tb := range tables {
			for i := 0; i < len(tb.rows); i += size {
				b, err := bconn.PrepareBatch(ctx, "INSERT INTO "+tb.name+" ("+tb.cols+")")
				if err != nil {
					return round{}, err
				}
				for _, r := range tb.rows[i:min(i+size, len(tb.rows))] {
					if err := b.Append(r...); err != nil {
						return round{}, err
					}
				}
				if err := b.Send(); err != nil {
					return round{}, err
				}
			}
			if tb.name == "attributions" {
				attrRows += len(tb.rows)
			}
		}
		r.base = float64(d.Len()) / time.Since(t0).Seconds()
		return r, nil
	}
	median := func(rounds []round) round {
		sort.Slice(rounds, func(i, j int) bool { return rounds[i].proc/rounds[i].base < rounds[j].proc/rounds[j].base })
		return rounds[len(rounds)/2]
	}
	var rounds []round
	for rnd := range ingestRounds {
		r, err := measure(rnd)
		if err != nil {
			return nil, err
		}
		rounds = append(rounds, r)
	}
	med := median(rounds)
	figs := []benchtest.Figure{{
		Name:  fmt.Sprintf("ingest Kafka→ClickHouse, %d records (+%d attribution rows), median of %d alternating rounds", records, attrRows, ingestRounds),
		Value: med.proc, Unit: "records/s",
		Baseline: "raw clickhouse-go batch insert of the same rows", BaselineValue: med.base,
	}}

	// The same with a large history already in ClickHouse: every batch
	// looks up its users (new ones included) in touchpoints_by_user and
	// conversions, whose rows the seed interleaves with the rounds' users.
	// The rounds above run on nearly empty tables; this shows what months
	// of data do to the history read.
	if history > 0 {
		if err := seedHistory(ctx, conn, history, ingestRounds, historyRounds, n/4/ingestRounds); err != nil {
			return nil, fmt.Errorf("seed history: %w", err)
		}
		records, attrRows = 0, 0
		rounds = nil
		for rnd := ingestRounds; rnd < ingestRounds+historyRounds; rnd++ {
			r, err := measure(rnd)
			if err != nil {
				return nil, err
			}
			rounds = append(rounds, r)
		}
		med := median(rounds)
		figs = append(figs, benchtest.Figure{
			Name: fmt.Sprintf("ingest Kafka→ClickHouse with %d touchpoints + %d conversions of history stored, %d records, median of %d alternating rounds",
				history, history/5, records, historyRounds),
			Value: med.proc, Unit: "records/s",
			Baseline: "raw clickhouse-go batch insert of the same rows", BaselineValue: med.base,
		})
	}
	return figs, nil
}

// historyRounds is how many ingest rounds run after seedHistory.
const historyRounds = 3

// seedHistory stores n touchpoints and n/5 conversions of users the
// processor never sees, on the server (INSERT … SELECT FROM numbers()),
// and merges them. Their user ids sort among those of the rounds
// [firstRound, firstRound+rounds) ("r5-user-00042-h7" beside
// "r5-user-00042"), as random user ids would: a batch's users fall into
// nearly every granule of the history tables, not into one corner.
func seedHistory(ctx context.Context, conn driver.Conn, n, firstRound, rounds, users int) error {
	user := fmt.Sprintf("concat('r', toString(%d + number %% %d), '-user-', substring(toString(100000 + intDiv(number, %d) %% %d), 2), '-h', toString(intDiv(number, %d)))",
		firstRound, rounds, rounds, users, rounds*users)
	at := strconv.FormatInt(time.Now().Unix(), 10)
	for _, q := range []string{
		`INSERT INTO touchpoints (id, user_id, partner_id, source, utm_source, utm_medium, utm_campaign, referrer, region, trace_id, occurred_at, ingested_at)
SELECT concat('hist-t', toString(number)), ` + user + `, concat('hist-partner-', toString(number % 20)), 'api_key', '', '', '', '', '', '',
  toDateTime(` + at + ` - number % (60 * 86400)), now()
FROM numbers(` + strconv.Itoa(n) + `)`,
		`INSERT INTO conversions (id, user_id, kind, amount, currency, amount_base, new_customer, refund_of, occurred_at, ingested_at)
SELECT concat('hist-c', toString(number)), ` + user + `, 'purchase', toDecimal64(number % 500, 4), 'USD', toDecimal64(number % 500, 4), 0, '',
  toDateTime(` + at + ` - number % (60 * 86400)), now()
FROM numbers(` + strconv.Itoa(n/5) + `)`,
		"OPTIMIZE TABLE touchpoints_by_user FINAL",
		"OPTIMIZE TABLE touchpoints FINAL",
		"OPTIMIZE TABLE conversions FINAL",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

type tableRows struct {
	name, cols string
	rows       [][]any
}

// readBack loads every row the processor wrote for the records whose ids
// (and partner ids) start with prefix, in insertable form.
func readBack(ctx context.Context, conn driver.Conn, prefix string) ([]tableRows, error) {
	// Rows come back in the order the processor wrote them (the raw
	// records in their partitions' log order, attribution rows by user
	// and conversion, rollup rows by key), not in the tables' key order:
	// read back part by part, a batch would hold one month's rows, sorted,
	// and its INSERT would write one part that ClickHouse need not sort,
	// where the processor's INSERTs, like any stream's, span the months
	// of the records they carry.
	specs := []struct{ name, cols, key, order string }{
		{"touchpoints", "id, user_id, partner_id, source, utm_source, utm_medium, utm_campaign, referrer, region, trace_id, occurred_at, ingested_at, src_topic, src_partition, src_offset", "id", "src_topic, src_partition, src_offset"},
		{"conversions", "id, user_id, kind, amount, currency, amount_base, new_customer, refund_of, occurred_at, ingested_at, src_topic, src_partition, src_offset", "id", "src_topic, src_partition, src_offset"},
		{"costs", "id, partner_id, amount, currency, amount_base, category, occurred_at, ingested_at, src_topic, src_partition, src_offset", "id", "src_topic, src_partition, src_offset"},
		{"attributions", "id, conversion_id, user_id, partner_id, model, kind, version, credit, revenue, new_customer, converted_at, ingested_at", "conversion_id", "user_id, conversion_id, version, model, partner_id"},
		{"roi_daily", strings.Join(strings.Fields(strings.ReplaceAll(chsql.RollupColumns, ",", " ")), ", "), "partner_id", "model, day, partner_id, prev_day, src"},
	}
	var out []tableRows
	for _, s := range specs {
		rows, err := conn.Query(ctx, "SELECT "+s.cols+" FROM "+s.name+" WHERE startsWith("+s.key+", ?) ORDER BY "+s.order, prefix)
		if err != nil {
			return nil, err
		}
		tr := tableRows{name: s.name, cols: s.cols}
		types := rows.ColumnTypes()
		for rows.Next() {
			vals := make([]any, len(types))
			for i, ct := range types {
				switch ct.DatabaseTypeName() {
				case "String":
					vals[i] = new(string)
				case "UInt8":
					vals[i] = new(uint8)
				case "UInt64":
					vals[i] = new(uint64)
				case "Int32":
					vals[i] = new(int32)
				case "Int64":
					vals[i] = new(int64)
				case "Decimal(18, 4)":
					vals[i] = new(decimal.Decimal)
				default: // DateTime('UTC'), Date
					vals[i] = new(time.Time)
				}
			}
			if err := rows.Scan(vals...); err != nil {
				rows.Close()
				return nil, err
			}
			for i, v := range vals {
				switch x := v.(type) {
				case *string:
					vals[i] = *x
				case *uint8:
					vals[i] = *x
				case *uint64:
					vals[i] = *x
				case *int32:
					vals[i] = *x
				case *int64:
					vals[i] = *x
				case *decimal.Decimal:
					vals[i] = *x
				case *time.Time:
					vals[i] = *x
				}
			}
			tr.rows = append(tr.rows, vals)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		out = append(out, tr)
	}
	return out, nil
}

// SeedSynthetic fills conn's (migrated) database on the server with n
// attribution rows (n/5 conversions × 5 models, 200 partners of Zipf sizes
// (zipfPartner), conversion k at asOf − k seconds, at most 90 days back;
// every model's row of 10 % of the conversions inserted twice, of 5 %
// re-attributed with a higher version), n/10 costs (10 % duplicated) and n
// touchpoints, with INSERT … SELECT FROM numbers()
// so a million rows take seconds, then rebuilds roi_daily from them as
// migration 0204 does. Zero asOf: now.
//
// Every event time is computed from asOf, never from the server's now():
// each INSERT evaluates now() again, seconds apart (more on a loaded
// server), so a "duplicate" step would write a copy of a record with a
// later converted_at/occurred_at — near a UTC midnight on the next day,
// where the daily rollups count it a second time and the raw tables (one
// row per id) do not. A real duplicate (a Kafka replay) carries the
// record's own time; so does this seed's.
func SeedSynthetic(ctx context.Context, conn driver.Conn, n int, asOf time.Time) error {
	if asOf.IsZero() {
		asOf = time.Now()
	}
	at := strconv.FormatInt(asOf.Unix(), 10)
	attr := `INSERT INTO attributions (id, conversion_id, user_id, partner_id, model, kind, version, credit, revenue, new_customer, converted_at, ingested_at)
SELECT
  hex(MD5(concat(toString(intDiv(number, 5)), '/', toString(number % 5)))) AS id,
  concat('c', toString(intDiv(number, 5))),
  concat('u', toString(intDiv(number, 5) % 150000)),
  ` + zipfPartner("intDiv(number, 5)") + `,
  ['first_touch', 'last_touch', 'linear', 'time_decay', 'position_based'][number % 5 + 1],
  'purchase', toUInt64(__VERSION__), toDecimal64(1, 4), toDecimal64(intDiv(number, 5) % 50000, 4) / 100,
  toDecimal64(intDiv(number, 5) % 3 = 0, 4),
  toDateTime(__AT__ - intDiv(number, 5) % (90 * 86400)), now()
FROM numbers(__ROWS__) WHERE __FILTER__`
	cost := `INSERT INTO costs (id, partner_id, amount, currency, amount_base, category, occurred_at, ingested_at)
SELECT concat('k', toString(number)), ` + zipfPartner("number") + `, toDecimal64(number % 1000, 4), 'USD',
  toDecimal64(number % 1000, 4), 'fee', toDateTime(__AT__ - number % (90 * 86400)), now()
FROM numbers(__ROWS__) WHERE __FILTER__`
	touch := `INSERT INTO touchpoints (id, user_id, partner_id, source, utm_source, utm_medium, utm_campaign, referrer, region, trace_id, occurred_at, ingested_at)
SELECT concat('t', toString(number)), concat('u', toString(number % 150000)), ` + zipfPartner("number % 150000") + `, 'utm',
  '', '', '', '', '', '', toDateTime(__AT__ - number % (90 * 86400)), now()
FROM numbers(__ROWS__) WHERE __FILTER__`
	// n and asOf are ints, not input: they are formatted into the text
	// (INSERT … SELECT with bound arguments is not worth the risk on 18.16).
	fill := func(q string, rows int, version, filter string) string {
		return strings.NewReplacer("__VERSION__", version, "__FILTER__", filter, "__ROWS__", strconv.Itoa(rows), "__AT__", at).Replace(q)
	}
	steps := []string{
		fill(attr, n, "1", "1"),
		fill(attr, n, "1", "intDiv(number, 5) % 10 = 0"),
		fill(attr, n, "2", "intDiv(number, 5) % 20 = 0"),
		fill(cost, n/10, "", "1"),
		fill(cost, n/10, "", "number % 10 = 0"),
		fill(touch, n, "", "1"),
	}
	for _, q := range steps {
		if err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	// roi_daily from the raw rows: what migration 0204 does to an existing
	// database (the processor writes it batch by batch), in slices of
	// partners that fit the server's memory.
	if err := conn.Exec(ctx, chsql.TruncateRollup.SQL); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	slices := max(1, n/1_000_000) // the slice holding p0 has about a fifth of the rows
	for r := range slices {
		if err := conn.Exec(ctx, chsql.RebuildRollupSlice.SQL, slices, r, slices, r, slices, r, slices, r); err != nil {
			return fmt.Errorf("seed: %s: %w", chsql.RebuildRollupSlice.Name, err)
		}
	}
	return nil
}

// seedPartners is how many partners SeedSynthetic spreads its rows over.
const seedPartners = 200

// zipfPartner is the SQL of the partner id of the row whose key is the
// expression x: partner k ("p<k>", k < 200) with probability
// ln((k+2)/(k+1)) / ln(201), about 1/(k+1) scaled — the Zipf-like sizes of
// an affiliate program's partners, where the largest few bring most of the
// conversions. p0 holds about 13 % of the rows, the median partner (p99)
// 0.19 %, p199 0.09 %. The draw is a hash of x, so every copy of a record
// (the seed's duplicates) and every row of one key gets the same partner.
func zipfPartner(x string) string {
	return "concat('p', toString(toUInt32(floor(exp(log(" + strconv.Itoa(seedPartners+1) + ") * (cityHash64(" + x + ") % 1000000) / 1000000))) - 1))"
}

// benchQueries times roi.Load from the rollups and from the raw tables over
// a seeded database (median of 7 runs after a warm-up), for every partner
// and for one partner, and checks both give the same figures. The seed and
// every query share one asOf, so a UTC midnight passing during the run
// moves no window.
func benchQueries(ctx context.Context, base config.ClickHouse, log *slog.Logger, n int) ([]benchtest.Figure, error) {
	c := base
	c.Database += "_q"
	conn, err := openBenchDB(ctx, c, log)
	if err != nil {
		return nil, err
	}
	defer dropBenchDB(ctx, conn, c)
	asOf := time.Now().UTC()
	t0 := time.Now()
	if err := SeedSynthetic(ctx, conn, n, asOf); err != nil {
		return nil, err
	}
	log.Info("attribution bench: seeded", "rows", n, "took", time.Since(t0))
	var out []benchtest.Figure
	var onePartnerRaw time.Duration
	for _, q := range []struct {
		name string
		q    roi.Query
	}{
		{"every partner", roi.Query{Model: "last_touch", Window: 30, AsOf: asOf}},
		// Partners differ in size by orders of magnitude (zipfPartner): the
		// largest is the one whose figures the raw tables are slowest for,
		// the median one shows what the rollups do for a typical partner,
		// whose raw rows the tables' primary key (partner first) narrows
		// to a few thousand.
		{"one partner (the largest: p0, 13 % of rows)", roi.Query{PartnerID: "p0", Model: "last_touch", Window: 30, AsOf: asOf}},
		{"one partner (median size: p99, 0.19 % of rows)", roi.Query{PartnerID: "p99", Model: "last_touch", Window: 30, AsOf: asOf}},
	} {
		fast, fr, err := timeLoad(ctx, conn, q.q, roi.Rollups)
		if err != nil {
			return nil, fmt.Errorf("%s from the rollups: %w", q.name, err)
		}
		slow, sr, err := timeLoad(ctx, conn, q.q, roi.Raw)
		if err != nil {
			return nil, fmt.Errorf("%s from the raw tables: %w", q.name, err)
		}
		if d := DiffTotals(fr, sr); d != "" {
			return nil, fmt.Errorf("rollups and raw tables disagree for %s (%+v): %s", q.name, q.q, d)
		}
		out = append(out, benchtest.Figure{
			Name:  fmt.Sprintf("ROI query, %s, 30 days, rollups (%d attribution rows)", q.name, n+n/10+n/20),
			Value: ms(fast), Unit: "ms", Baseline: "same figures from raw tables", BaselineValue: ms(slow),
		})
		if q.q.PartnerID == "p99" {
			onePartnerRaw = slow
		}
	}
	// The floor under any query: a SELECT 1 round trip on the same
	// connection, timed as the ROI queries are. Its ratio to the median
	// partner's raw query bounds the speed-up any serving path inside this ClickHouse
	// can show for one partner (a ratio of 0.05 allows at most 20×).
	floor, err := timeQuery(func() error {
		var one uint8
		return conn.QueryRow(ctx, "SELECT toUInt8(1)").Scan(&one)
	})
	if err != nil {
		return nil, fmt.Errorf("SELECT 1: %w", err)
	}
	out = append(out, benchtest.Figure{
		Name:  "ClickHouse query floor: SELECT 1 round trip (the least any ROI query can take)",
		Value: ms(floor), Unit: "ms", Baseline: "the median partner from raw tables", BaselineValue: ms(onePartnerRaw),
	})
	// Untimed: every model (one at a time: the raw tables' GROUP BY id over
	// every model of 10 M rows does not fit a small server's memory), so
	// the check covers all of the seed's duplicates and re-attributions,
	// not only last-touch ones.
	for _, m := range models.All {
		all := roi.Query{Model: m, Window: 30, AsOf: asOf}
		fr, err := roi.Load(ctx, conn, all, roi.Rollups)
		if err != nil {
			return nil, fmt.Errorf("rollups, %s: %w", m, err)
		}
		sr, err := roi.Load(ctx, conn, all, roi.Raw)
		if err != nil {
			return nil, fmt.Errorf("raw tables, %s: %w", m, err)
		}
		if d := DiffTotals(fr, sr); d != "" {
			return nil, fmt.Errorf("rollups and raw tables disagree for %s (%+v): %s", m, all, d)
		}
	}
	return out, nil
}

// DiffTotals compares two roi.Load results field by field (decimals by
// value, so 1.5 equals 1.5000) and describes the first difference; "" when
// they are equal.
func DiffTotals(a, b []roi.Totals) string {
	for i := range min(len(a), len(b)) {
		x, y := a[i], b[i]
		var fs []string
		if x.PartnerID != y.PartnerID || x.Model != y.Model {
			fs = append(fs, fmt.Sprintf("key %s/%s vs %s/%s", x.PartnerID, x.Model, y.PartnerID, y.Model))
		}
		for _, f := range []struct {
			name string
			x, y decimal.Decimal
		}{
			{"revenue", x.Revenue, y.Revenue}, {"conversions", x.Conversions, y.Conversions},
			{"new_customers", x.NewCustomers, y.NewCustomers}, {"cost", x.Cost, y.Cost},
		} {
			if !f.x.Equal(f.y) {
				fs = append(fs, fmt.Sprintf("%s %s vs %s", f.name, f.x, f.y))
			}
		}
		if x.Customers != y.Customers {
			fs = append(fs, fmt.Sprintf("customers %d vs %d", x.Customers, y.Customers))
		}
		if x.Leads != y.Leads {
			fs = append(fs, fmt.Sprintf("leads %d vs %d", x.Leads, y.Leads))
		}
		if len(fs) > 0 {
			return fmt.Sprintf("row %d (partner %s, model %s): %s", i, x.PartnerID, x.Model, strings.Join(fs, "; "))
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d rows vs %d", len(a), len(b))
	}
	return ""
}

func timeLoad(ctx context.Context, conn driver.Conn, q roi.Query, src roi.Source) (time.Duration, []roi.Totals, error) {
	res, err := roi.Load(ctx, conn, q, src) // warm-up
	if err != nil {
		return 0, nil, err
	}
	d, err := timeQuery(func() error {
		_, err := roi.Load(ctx, conn, q, src)
		return err
	})
	return d, res, err
}

// timeQuery is the median of 7 runs of f.
func timeQuery(f func() error) (time.Duration, error) {
	var ds []time.Duration
	for i := 0; i < 7; i++ {
		t0 := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(t0))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2], nil
}
