# hopcheck — build, test, lint, bench.
GO        ?= go
BIN       ?= bin/hopcheck
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/hopcheck/hopcheck/cli.Version=$(VERSION)
export CGO_ENABLED = 0

.PHONY: build test unit lint bench bench-soak fuzz demo deps clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

# The whole suite: unit tests everywhere, lab tests in network namespaces
# (root needed; they skip otherwise, or fail under HOPCHECK_LAB=required).
test:
	$(GO) test -count=1 -timeout 14m -parallel 4 ./...

# The embedded demo: a faulty namespace lab diagnosed end to end (root).
demo: deps build
	./$(BIN) demo

# Lab prerequisites (nftables, iproute2, traceroute), installed when missing.
deps:
	@bash scripts/deps.sh

# Unit tests only (no namespaces).
unit:
	$(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Speed targets (benchmarks, not timed tests): decoders, builders, and the
# lab comparison of hopcheck trace against traceroute (root needed).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./probe/... ./trace/...
	HOPCHECK_BENCH=1 $(GO) test -run '^$$' -bench 'Lab' -benchtime 1x -timeout 20m ./e2e/...

# Soak memory over 11 minutes in the lab: RSS at minute 1 vs minute 10 (root).
bench-soak:
	HOPCHECK_BENCH_SOAK=1 $(GO) test -run '^$$' -bench 'LabSoakRSS' -benchtime 1x -timeout 20m ./e2e/...

# Short fuzzing of every decoder in every package that has fuzz targets
# (each package's seed corpus lives in its testdata/fuzz).
FUZZTIME ?= 20s
FUZZPKGS ?= ./probe ./localise ./trace ./internal/amqp ./tcpcheck
fuzz:
	@for p in $(FUZZPKGS); do \
		for f in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
			echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p || exit 1; done; done

clean:
	rm -rf bin
