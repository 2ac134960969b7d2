# partners-engine. `make run` starts the system; `make test` installs and
# starts what the tests need (ClickHouse, Apache Kafka, a Kafka cluster,
# ZooKeeper, a ClickHouse cluster, Redis and the rate-limit service) and runs them.
SHELL := /bin/bash
GO ?= go
BIN := bin/partners
export PARTNERS_TEST_KAFKA ?= 127.0.0.1:9092
export PARTNERS_TEST_CLICKHOUSE ?= 127.0.0.1:9000
# The SQL conformance suite (schemas/chsql): an 18.16 server in a non-UTC
# zone and current ClickHouse engines through chDB (deploy/local/chdb.sh).
export PARTNERS_TEST_CLICKHOUSE_TZ ?= 127.0.0.1:9410
TEST_TIMEOUT ?= 18m

# Where the rest of the local stack is (deploy/local/up.sh starts it); only
# make test exports these, so make unit / test-kfake / bench never need them.
# A test whose variable is set fails when the server does not answer.
TEST_STACK_ENV := \
	PARTNERS_TEST_KAFKA_SASL=$${PARTNERS_TEST_KAFKA_SASL-127.0.0.1:9094} \
	PARTNERS_TEST_KAFKA_SASL_SSL=$${PARTNERS_TEST_KAFKA_SASL_SSL-127.0.0.1:9095} \
	PARTNERS_TEST_KAFKA_CLUSTER=$${PARTNERS_TEST_KAFKA_CLUSTER-127.0.0.1:29091,127.0.0.1:29092,127.0.0.1:29093} \
	PARTNERS_TEST_CLICKHOUSE_CLUSTER=$${PARTNERS_TEST_CLICKHOUSE_CLUSTER-127.0.0.1:29001,127.0.0.1:29002,127.0.0.1:29003} \
	PARTNERS_TEST_REDIS=$${PARTNERS_TEST_REDIS-127.0.0.1:16379}

.PHONY: all build run test test-kfake chaos unit bench lint fmt vet staticcheck clean stack stack-core stack-down tidy-check browser

all: build

build:
	$(GO) build -o $(BIN) ./cmd/partners

## run: the whole system in one process (embedded Kafka, local ClickHouse)
run: build
	bash deploy/local/clickhouse.sh start
	bash deploy/local/ratelimit.sh start
	$(BIN) dev

## stack: start everything make test uses (installed/fetched if missing): ClickHouse, the Kafka
## broker (PLAINTEXT + SASL), the 3-broker Kafka cluster, ZooKeeper, the ClickHouse cluster, Redis and
## the global rate-limit service (envoyproxy/ratelimit)
stack:
	bash deploy/local/up.sh

## stack-core: all but the Kafka cluster, ZooKeeper and the ClickHouse cluster (make bench)
stack-core:
	bash deploy/local/up.sh core

stack-down:
	bash deploy/local/down.sh

## browser: Debian's chromium for the web UI's browser suite (apt when missing)
browser:
	@bash deploy/local/chromium.sh install

## test: lint, then every test with -race against real Kafka and ClickHouse (and the UI in Chromium)
test: stack browser lint
	@$(TEST_STACK_ENV) $(GO) test -count=1 -v -run TestServerVersions ./internal/testenv/ | grep 'server under test' || { echo "servers not reachable"; exit 1; }
	@bash deploy/local/chdb.sh versions | sed 's/^/    SQL engine under test: chDB /'
	@bash deploy/local/schemathesis.sh install && bash deploy/local/schemathesis.sh version | sed 's/^/    API contract test: /'
	@mkdir -p .local; set -o pipefail; export PARTNERS_TEST_CHDB=$$(bash deploy/local/chdb.sh pythons) PARTNERS_TEST_BROWSER=$$(bash deploy/local/chromium.sh path); \
	export PARTNERS_TEST_SCHEMATHESIS=$$(bash deploy/local/schemathesis.sh bin); $(TEST_STACK_ENV) \
	$(GO) test -race -count=1 -v -timeout $(TEST_TIMEOUT) ./... 2>&1 | tee .local/test.log | grep -E --line-buffered "$(TEST_SHOW)" \
	|| { echo "--- failures (full log: .local/test.log) ---"; grep -E -B30 -A5 -- '--- FAIL|^panic:|DATA RACE' .local/test.log | head -400; exit 1; }

# What make test shows of the verbose log: package results and the figures
# the tests measure (server versions, follow and revocation delays,
# freshness, crash duplicates, isolation under a hanging partner, traces).
TEST_SHOW := ^(ok|FAIL|panic:|--- FAIL)|server under test|SQL conformance|follower applied|revocation:|freshness produce|kill -9 |outage 10 s|concurrent test calls|backlog drained|caught up|healthy partners|noise, alone|with a hang|trace [0-9a-f]{32}|tier limit|own limit|burst of|Redis down|browser suite:|schemathesis: [0-9]+ test cases|rounds over two (servers|control-plane processes)|rounds of concurrent writers
# the fault suite's report table (chaos/)
TEST_SHOW := $(TEST_SHOW)|chaos \|

## test-kfake: the same suite on the embedded kfake broker (ClickHouse still real)
test-kfake:
	bash deploy/local/clickhouse.sh start
	bash deploy/local/sql-engines.sh start
	bash deploy/local/ratelimit.sh start
	PARTNERS_TEST_REDIS=127.0.0.1:16379 PARTNERS_TEST_KAFKA= PARTNERS_TEST_CHDB=$$(bash deploy/local/chdb.sh pythons) $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

## chaos: the fault suite's long profile (chaos/profiles/long.yaml: several rounds per scenario) on
## the local stack; prints the report table, writes .local/chaos/report-long-*.json. make test runs
## the bounded profile (chaos/profiles/bounded.yaml) with everything else.
chaos: stack build
	@mkdir -p .local; set -o pipefail; $(TEST_STACK_ENV) PARTNERS_CHAOS_PROFILE=long \
	$(GO) test -count=1 -v -run TestFaults -timeout 120m ./chaos/ 2>&1 | tee .local/chaos.log | grep -E --line-buffered "$(TEST_SHOW)" \
	|| { echo "--- failures (full log: .local/chaos.log) ---"; grep -E -B5 -A20 -- '--- FAIL|^panic:' .local/chaos.log | head -200; exit 1; }

## unit: fast tests only (no servers needed; integration tests skip or use kfake)
unit:
	env -u PARTNERS_TEST_KAFKA -u PARTNERS_TEST_CLICKHOUSE -u PARTNERS_TEST_CLICKHOUSE_TZ $(GO) test -short -count=1 ./...

## bench: every benchmark with its same-run baseline; writes bench-results.json
bench: stack-core
	$(GO) run ./bench -json bench-results.json $(BENCH_FLAGS)

## lint: gofmt, go vet, staticcheck (pinned by the tool directive in go.mod), go mod tidy
lint: fmt vet staticcheck tidy-check

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

# go mod tidy -diff changes nothing and writes no backup anywhere, so two
# checkouts' lint runs cannot collide.
tidy-check:
	@$(GO) mod tidy -diff >/dev/null 2>&1 || { echo "go.mod/go.sum not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }

clean:
	rm -rf bin bench-results.json
	@echo "local data kept in .local/ (rm -rf .local to reset ClickHouse, Kafka and the embedded broker)"
