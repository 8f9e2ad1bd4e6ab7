# invokeari — see README.md. Every target stays on 127.0.0.1.
GO      ?= go
# encoding/json on the v2 implementation: ARI event decoding measured 2.5x faster
# (BenchmarkDecodeEvent: 8.9 µs → 3.5 µs per event, 22 → 4 allocs). Plain `go build`
# works too; the test suite passes under both.
export GOEXPERIMENT ?= jsonv2
PKGS    := ./...
BIN     := bin/invokeari

.PHONY: run build test check bench fuzz faults itest clean cluster-demo

## run: start the daemon on the embedded defaults (embedded NATS + built-in Asterisk simulator)
run:
	$(GO) run ./cmd/invokeari serve $(ARGS)

build:
	$(GO) build -o $(BIN) ./cmd/invokeari

## test: the whole suite with the race detector, one package at a time (timing-sensitive
## replays of the recordings and the short fault run get the CPU), then each fuzzer briefly
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -p 1 -timeout 20m $(PKGS)
	$(MAKE) --no-print-directory fuzz FUZZTIME=20000x

## check: formatting and vet
check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## bench: the published benchmark (bounded, loopback only); writes BENCHMARKS.md
bench:
	$(GO) run ./cmd/invokeari bench -out BENCHMARKS.md

## fuzz: each fuzz target for a bounded time
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./bridge/api -run '^$$' -fuzz '^FuzzDecodeBody$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 50x
	$(GO) test ./bridge/api -run '^$$' -fuzz '^FuzzParseVariables$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 50x
	$(GO) test ./bridge/api -run '^$$' -fuzz '^FuzzParseCallerID$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 50x

## faults: the full fault-injection suite with its table
faults:
	$(GO) test -race -count=1 -timeout 30m ./cmd/invokeari -run TestFaults -v -args -faults.full

## itest: the real-PBX suite against the kit's Asterisk 22 (../shared/asterisk), started once
## for the run on PBX_BASE and stopped on exit. The itest package prints its table and
## `N passed, N failed`; then the real-PBX tests of the other packages (transport burst,
## restart with history, SIGKILL restart, webhook calls) and, last because it restarts
## Asterisk, the differential conformance test (simulator vs kit). Every part runs even if
## an earlier one failed; the target fails if any did.
PBX      ?= ../shared/asterisk/pbx
PBX_BASE ?= 18088
ITEST_RUN := ^(TestRealPBX.*|TestPBX.*|TestWebhookCallPBX|TestCluster(SpreadAndOneDialPerID|DaemonKilledCallsAdopted|NATSNodeKilled))$$
itest:
	@set -e; env="$$($(PBX) start --base $(PBX_BASE) --export)"; eval "$$env"; \
	trap '$(PBX) stop --base $(PBX_BASE)' EXIT; rc=0; \
	$(GO) test -count=1 -v -timeout 15m ./cmd/invokeari/itest/... || rc=1; \
	$(GO) test -count=1 -p 1 -timeout 15m -run '$(ITEST_RUN)' ./stasisapp/ari ./stasisapp ./cmd/invokeari || rc=1; \
	$(GO) test -count=1 -timeout 10m -run '^TestDifferential$$' ./stasisapp/sim || rc=1; \
	exit $$rc

## cluster-demo: two daemons sharing calls on a three-node NATS cluster, with the simulator,
## all on 127.0.0.1 (README "Running several daemons"); stops after CLUSTER_DEMO_SECONDS or Ctrl-C
cluster-demo: build
	./configs/cluster/demo.sh

clean:
	rm -rf bin data
