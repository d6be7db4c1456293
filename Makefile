# l2shim. `make test` runs every test (integration tests need root); `make demo` shows it at work.
GO       ?= go
BIN      := bin/l2shim
FUZZTIME ?= 10s
UNIT     := ./cmd/... ./conf/... ./conntrack/... ./failover/... ./filters/... ./rewrite/... ./shim/...
export CGO_ENABLED := 0

.PHONY: all build test unit lint fuzz integration demo bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/l2shim

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The race detector needs cgo.
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(UNIT)

# Short fuzz runs on top of the seed corpora that `unit` already runs.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseRewrite$$' -fuzztime $(FUZZTIME) ./rewrite/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./conf/
	$(GO) test -run '^$$' -fuzz '^FuzzDatapath$$' -fuzztime $(FUZZTIME) ./shim/

integration: build
	L2SHIM_BIN=$(abspath $(BIN)) $(GO) test -count=1 -timeout 20m -v ./integration/

test: build lint unit fuzz integration

demo: build
	./$(BIN) demo

bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./rewrite/ ./conntrack/ ./failover/ ./shim/
	$(GO) run ./integration/bench -shim $(BIN)

clean:
	rm -rf bin
