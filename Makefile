# mulegate's development loop. `make test` is the one command CI runs.
SHELL := /bin/bash
GO ?= go
# Binaries of the servers the tests start (nats-server, …) are cached here.
TOOLS_BIN := $(CURDIR)/.cache/bin
export PATH := $(TOOLS_BIN):$(PATH)
export MULEGATE_TOOLS_BIN := $(TOOLS_BIN)

.PHONY: all build test test-servers bench fuzz lint proto

all: lint build test

build:
	$(GO) build ./...

# Installs (once, cached) every server the tests need, then runs every test.
test: test-servers
	$(GO) vet ./...
	$(GO) test -race -timeout 75m ./...

test-servers:
	@./scripts/test-servers

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

# A short run of every fuzz target; FUZZTIME=2m for a longer one.
FUZZTIME ?= 20s
fuzz:
	@./scripts/fuzz-all $(FUZZTIME)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Regenerates the adapter contract's Go code. Needs protoc (Debian:
# protobuf-compiler, libprotobuf-dev) and the two Go generators below.
proto:
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	protoc -I plugins/proto -I /usr/include \
		--go_out=plugins/proto --go_opt=paths=source_relative \
		--go-grpc_out=plugins/proto --go-grpc_opt=paths=source_relative \
		plugins/proto/adapter.proto
