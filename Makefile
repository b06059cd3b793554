# qtables: `make demo` runs the main job on shipped defaults, `make test`
# runs the whole test suite. Both install what is missing (scripts/deps.sh).

GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN      := bin/qtables
N        ?= 1000
FUZZTIME ?= 15s
OUT      := out

.PHONY: all build deps demo test vet fmt-check fuzz conformance bench clean

all: build

deps:
	@scripts/deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/qtables

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The whole suite: formatting, vet, unit tests with the race detector, and
# the kernel conformance suite (root; it creates its own network namespaces).
test: deps fmt-check vet
	$(GO) test -race -count=1 -timeout 40m ./... ./testdata/examples/

demo: build
	@scripts/deps.sh demo
	@scripts/demo.sh

# More kernel conformance cases than make test runs (N stateless and N
# stateful cases): make conformance N=5000
conformance: deps
	QTABLES_CONFORMANCE_N=$(N) QTABLES_STATE_N=$(N) $(GO) test -count=1 -timeout 120m -run Kernel -v ./conformance/ | tail -n 40

fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench:
	@mkdir -p $(OUT)
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./... | tee $(OUT)/bench.txt

clean:
	rm -rf bin $(OUT)

# Live NFQUEUE throughput and latency (a benchmark, not a test; root): small
# UDP datagrams through one and two queues for qtables (accept-all and 100
# rules), a C libnetfilter_queue consumer, a plain go-nfqueue loop and the
# kernel without a queue, side by side in namespaces it creates. Then the
# 10,000-rule comparison (issue 7): ClassBench acl1_10k (../shared, else the
# generator's acl set) in FORWARD for the kernel's iptables-legacy,
# iptables-nft and qtables run behind NFQUEUE, on generated traffic aimed at
# every rule, fresh namespaces per measurement, counters cross-checked, the
# rate against iptables-legacy's in the same round. Both tables in
# out/bench-live.md (about 4 minutes). BENCHLIVE_FLAGS="-rounds 5 -duration
# 5s" for more, "-rules 0" without the comparison, "-rules 1000 -ruleset
# gen:fw" for another set, "-only NAME,..." for some consumers only.
.PHONY: bench-live
bench-live: build
	@scripts/deps.sh bench-live
	@mkdir -p $(OUT)
	gcc -O2 -Wall -o $(OUT)/nfq_accept bench/live/nfq_accept.c -lnetfilter_queue -lnfnetlink
	$(GO) build -o $(OUT)/livebench ./bench/live/livebench
	$(OUT)/livebench -qtables $(BIN) -c $(OUT)/nfq_accept -out $(OUT)/bench-live.md $(BENCHLIVE_FLAGS)
