# hopcheck — build, test, lint, bench.
GO        ?= go
BIN       ?= bin/hopcheck
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# urfave_cli_no_docs leaves urfave/cli's markdown/roff renderers (go-md2man,
# blackfriday) out of the binary: their init cost every command's start-up;
# `hopcheck man` prints the page embedded at build time (cli/hopcheck.1).
GOTAGS    := urfave_cli_no_docs
LDFLAGS   := -s -w -X github.com/hopcheck/hopcheck/cli.Version=$(VERSION) -X github.com/hopcheck/hopcheck/cli.Commit=$(COMMIT)
export CGO_ENABLED = 0

.PHONY: build test unit lint bench bench-soak fuzz demo deps deb nfpm clean

build:
	$(GO) build -trimpath -tags '$(GOTAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) .

# The whole suite: unit tests everywhere, lab tests in network namespaces
# (root needed; they skip otherwise, or fail under HOPCHECK_LAB=required).
test:
	$(GO) test -count=1 -timeout 14m -parallel 8 ./...

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

# The Debian package ($(DIST)/hopcheck_<version>_amd64.deb), built with nfpm:
# the binary, the man page and bash/zsh completion generated from the CLI
# definition, a systemd service and timer (not enabled), the service's default
# options in /usr/share/hopcheck/default; no conffile (dpkg -r leaves nothing).
# nfpm is a build tool, not a dependency of hopcheck: it is installed into
# bin/ (once per version; Go's module and build caches make a rebuild cheap)
# rather than added to go.mod.
NFPM_VERSION   := v2.48.0
NFPM           := bin/nfpm-$(NFPM_VERSION)/nfpm
# Debian versions: a tag v1.2.3 -> 1.2.3, commits after it (v1.2.3-4-gabc)
# -> 1.2.3+4.gabc, an untagged commit abc1234 -> 0.0~gitabc1234; any other
# '-' (-rc1, -dirty) becomes '~', which sorts before the version without it.
DEB_VERSION    ?= $(shell echo '$(VERSION)' | sed -E -e 's/^v([0-9]+\.)/\1/' -e '/^[0-9]+\.[0-9]/!s/^/0.0~git/' \
                    -e 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/' -e 's/-/~/g')
DEB_MAINTAINER ?= hopcheck developers <hopcheck@invalid>
DIST           ?= dist

$(NFPM):
	GOBIN=$(CURDIR)/$(dir $(NFPM)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

nfpm: $(NFPM)

deb: build $(NFPM)
	rm -rf bin/pkg && mkdir -p bin/pkg $(DIST)
	./$(BIN) man | gzip -9n > bin/pkg/hopcheck.1.gz
	./$(BIN) completion bash > bin/pkg/hopcheck.bash
	./$(BIN) completion zsh > bin/pkg/_hopcheck
	DEB_VERSION='$(DEB_VERSION)' DEB_MAINTAINER='$(DEB_MAINTAINER)' $(NFPM) package \
		--config packaging/nfpm.yaml --packager deb --target $(DIST)/hopcheck_$(DEB_VERSION)_amd64.deb

clean:
	rm -rf bin dist
