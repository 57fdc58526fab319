# switchyard — make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin

# Pinned code generator versions live in scripts/proto.sh.

.PHONY: help build run realfleet test bench bench-proxy proto proto-check lint clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build every binary into ./bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ ./cmd/...

run: ## run the router on the embedded demo fleet (in-memory counters, simulated three-cloud fleet)
	$(GO) run ./cmd/switchyard --sim-control-listen 127.0.0.1:50061

realfleet: ## three real llama-server pools (aws, gcp, azure) behind the router on 127.0.0.1:50051 (PORTS="8081 8082 8083", SLOTS=4, LISTEN=...)
	PORTS="$(PORTS)" SLOTS="$(SLOTS)" LISTEN="$(LISTEN)" ./scripts/realfleet.sh

test: ## run every test (installs redis-server when missing)
	./scripts/test.sh

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench-proxy: ## switchyard's added latency and saturation next to nginx grpc_pass, one run (scripts/bench-proxy.sh; ROUNDS=3 for medians)
	./scripts/bench-proxy.sh

proto: ## regenerate the protobuf Go code with the pinned generators (scripts/proto.sh)
	./scripts/proto.sh

proto-check: ## fail when the committed generated code is stale
	./scripts/proto.sh --check

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean: ## remove build output
	rm -rf $(BIN)
