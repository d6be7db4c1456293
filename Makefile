# l2shim. `make test` runs every test (integration tests need root); `make demo` shows it at work.
GO       ?= go
BIN      := bin/l2shim
# A count, not a duration: with a duration, a worker still busy when it ends fails the run with
# "context deadline exceeded" (seen in CI on 2 cores).
FUZZTIME ?= 40000x
UNIT     := ./cmd/... ./integration/bench/ ./conf/... ./conntrack/... ./control/... ./datapath/... ./dist/... ./failover/... ./fastpath/... ./filters/... ./internal/... ./metrics/... ./rewrite/... ./shim/...
export CGO_ENABLED := 0
# The version `l2shim version` prints and the Debian package carries: git describe made a
# Debian version (dist/version.sh: tag v1.2.3 -> 1.2.3, no tag -> 0.0.0~gitYYYYMMDD.HASH).
VERSION  := $(shell sh dist/version.sh)
GO_LDFLAGS ?= $(if $(VERSION),-X main.version=$(VERSION))

.PHONY: all build test unit lint fuzz integration demo bench clean generate generated cross deb deb-arm64

all: build

# -trimpath: no build paths in the binary (and the same build cache as make deb's).
build:
	$(GO) build -trimpath -ldflags '$(GO_LDFLAGS)' -o $(BIN) ./cmd/l2shim

# linux/arm64 (64-bit ARM boards): every package compiles for it. The eBPF objects are the
# little-endian ones there as on amd64 (dist/deb_test.go checks the arm64 binary embeds
# fastpath_bpfel.o). -trimpath as make deb builds, so the package test reuses this build cache.
cross:
	GOOS=linux GOARCH=arm64 $(GO) build -trimpath ./...

# staticcheck is pinned by go.mod's tool directive: `go mod download` fetches it with the other
# modules, and `go tool` builds it from the module cache, so lint needs no network after that.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# The eBPF programs (fastpath/bpf/*.c) are compiled by clang-14 through bpf2go; the objects are
# committed, so `make build` needs no clang. `make generate` rebuilds them; `generated` (part of
# `make test`) fails when the committed objects are not what the sources compile to.
generate:
	cd fastpath && $(GO) generate ./...

generated: generate
	@git diff --quiet -- fastpath/ || { echo "fastpath: the committed eBPF objects are stale: run make generate and commit"; git diff --stat -- fastpath/; exit 1; }

# The race detector needs cgo. It allocates, so the allocation and memory tests run once more
# without it (some of them are built only without it).
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(UNIT)
	$(GO) test -count=1 -run 'Alloc|Memory' $(UNIT)

# Short fuzz runs on top of the seed corpora that `unit` already runs.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseRewrite$$' -fuzztime $(FUZZTIME) ./rewrite/
	$(GO) test -run '^$$' -fuzz '^FuzzWalkIPv6$$' -fuzztime $(FUZZTIME) ./rewrite/
	$(GO) test -run '^$$' -fuzz '^FuzzParseRewrite6$$' -fuzztime $(FUZZTIME) ./rewrite/
	$(GO) test -run '^$$' -fuzz '^FuzzFragment4$$' -fuzztime $(FUZZTIME) ./rewrite/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./conf/
	$(GO) test -run '^$$' -fuzz '^FuzzDatapath$$' -fuzztime $(FUZZTIME) ./datapath/
	$(GO) test -run '^$$' -fuzz '^FuzzTable$$' -fuzztime $(FUZZTIME) ./conntrack/

integration: build
	L2SHIM_BIN=$(abspath $(BIN)) $(GO) test -count=1 -timeout 20m -v ./integration/

test: build lint generated cross unit fuzz integration

demo: build
	./$(BIN) demo

# The Go benchmarks, then integration/bench (root, about 10 minutes in all): kernel alone vs
# l2shim, with its fast path and with --no-fast-path, on the integration topology; see
# docs/testing.md. Neither runs while integration tests run (pgrep -f integration.test): they
# would disturb each other; both wait, at most 20 minutes. BENCHFLAGS go to integration/bench
# (e.g. BENCHFLAGS='-only tcp_up -rounds 1').
BENCHFLAGS ?=
bench: build
	@n=0; while pgrep -f 'integration[.]test' >/dev/null; do \
		if [ $$n -ge 240 ]; then echo "bench: integration tests still running after 20 minutes" >&2; exit 1; fi; \
		[ $$n -gt 0 ] || echo "bench: integration tests are running: waiting"; n=$$((n+1)); sleep 5; done
	$(GO) test -run '^$$' -bench . -benchmem ./rewrite/ ./conntrack/ ./failover/ ./datapath/ ./shim/ ./fastpath/
	$(GO) run ./integration/bench -shim $(BIN) $(BENCHFLAGS)

clean:
	rm -rf bin $(DEBDIR)

# `make deb` builds $(DEBDIR)/l2shim_VERSION_ARCH.deb with dpkg-deb for GOARCH (amd64 or arm64;
# `make deb GOARCH=arm64` or `make deb-arm64` cross-builds): the tree `make install PREFIX=/usr`
# lays out, /etc/l2shim/l2shim.toml as a conffile, maintainer scripts that never enable or start
# l2shim. See dist/mkdeb.sh. VERSION=... overrides the version from git.
DEBDIR  ?= dist/out
DEBARCH  = $(or $(GOARCH),$(shell $(GO) env GOARCH))

deb:
	GO=$(GO) sh dist/mkdeb.sh -a $(DEBARCH) -v '$(VERSION)' -o $(DEBDIR)

deb-arm64:
	$(MAKE) --no-print-directory deb GOARCH=arm64

# `make` as yourself, then `sudo make install`: the binary to $(PREFIX)/sbin, the systemd unit
# to $(UNITDIR) (/usr/local/lib/systemd/system is on systemd's unit path; packagers use
# PREFIX=/usr), the example config to /etc/l2shim/l2shim.toml unless one is there already, the
# docs to $(DOCDIR), the manual page to $(MANDIR)/man8. DESTDIR stages the whole tree.
# uninstall keeps /etc/l2shim.
PREFIX  ?= /usr/local
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/l2shim
MANDIR  ?= $(PREFIX)/share/man

.PHONY: install uninstall

install:
	@if command -v $(GO) >/dev/null 2>&1; then $(MAKE) --no-print-directory build; \
	elif [ -x $(BIN) ]; then echo "install: no $(GO) here; installing the $(BIN) already built"; \
	else echo "install: no $(BIN) and no $(GO): run make first" >&2; exit 1; fi
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/sbin/l2shim
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)/docs
	sed 's|/usr/local/|$(PREFIX)/|g' dist/l2shim.service >$(DESTDIR)$(UNITDIR)/l2shim.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/l2shim.service
	install -m 0644 README.md LICENSE dist/l2shim.toml $(DESTDIR)$(DOCDIR)/
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/
	install -D -m 0644 dist/l2shim.8 $(DESTDIR)$(MANDIR)/man8/l2shim.8
	@if [ -e $(DESTDIR)/etc/l2shim/l2shim.toml ]; then \
		echo "install: kept $(DESTDIR)/etc/l2shim/l2shim.toml; the new example is $(DESTDIR)$(DOCDIR)/l2shim.toml"; \
	else install -D -m 0644 dist/l2shim.toml $(DESTDIR)/etc/l2shim/l2shim.toml && \
		echo "install: edit /etc/l2shim/l2shim.toml, then: l2shim check && systemctl daemon-reload && systemctl enable --now l2shim"; fi

# uninstall first removes what a stopped l2shim may have left pinned in the kernel (its hooks
# keep carrying established flows until then): only on the live system, not into a DESTDIR.
# l2shim cleanup refuses while l2shim runs (stop it first; the files go anyway).
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -x $(PREFIX)/sbin/l2shim ]; then $(PREFIX)/sbin/l2shim cleanup || true; fi
	rm -f $(DESTDIR)$(PREFIX)/sbin/l2shim $(DESTDIR)$(UNITDIR)/l2shim.service $(DESTDIR)$(MANDIR)/man8/l2shim.8
	rm -rf $(DESTDIR)$(DOCDIR)
	@echo "uninstall: kept /etc/l2shim (your configuration); systemctl daemon-reload to forget the unit"
