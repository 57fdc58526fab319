# switchyard — make help lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin

# Pinned code generators; `make proto` installs exactly these into ./bin.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
# protoc itself comes from Debian's protobuf-compiler package (3.21.12 on bookworm).
PROTOC_VERSION             := 3.21.12

.PHONY: help build run test bench proto proto-check lint clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build every binary into ./bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ ./cmd/...

run: ## run the router on the embedded demo fleet (in-memory counters, simulated three-cloud fleet)
	$(GO) run ./cmd/switchyard

test: ## run every test (installs redis-server when missing)
	./scripts/test.sh

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

proto: ## regenerate the protobuf Go code with the pinned generators
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	@protoc --version | grep -q "$(PROTOC_VERSION)" || echo "warning: protoc $$(protoc --version) is not the pinned $(PROTOC_VERSION)"
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(BIN):$$PATH protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/switchyard/v1/*.proto

proto-check: proto ## fail when the committed generated code is stale
	git diff --exit-code -- proto/

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean: ## remove build output
	rm -rf $(BIN)
