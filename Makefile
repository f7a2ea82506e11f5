# berth's developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export GOTOOLCHAIN ?= local
GO ?= go
BIN := $(CURDIR)/bin
TOOLS_ENV = eval "$$(bash hack/tools.sh env)"
# Integration test packages each start their own local cluster.
INTEGRATION_PKGS := ./test/...
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/test/')
# The packages of the Go files git tracks (hack/tools/etcd is a module of its
# own), so that leftovers such as bin/ never change what is linted.
LINT_PKGS = $(patsubst %/,./%,$(sort $(dir $(wildcard $(shell git ls-files -- '*.go' ':!:hack/tools/')))))
CLUSTER_FLAGS ?=
TEST_FLAGS ?=

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Build the pinned tools (kube-*, etcd, kwok, controller-gen, azurite, helm, metrics-server, Karpenter's kwok provider, golangci-lint) into the cache outside the clone.
	bash hack/tools.sh all

.PHONY: generate
generate: ## Regenerate deepcopy code and the CRDs from pkg/apis, and copy the shipped manifests into the chart.
	bash hack/tools.sh controller-gen
	$(TOOLS_ENV); "$$CONTROLLER_GEN_DIR/controller-gen" object:headerFile=hack/boilerplate.go.txt paths=./pkg/apis/...
	$(TOOLS_ENV); "$$CONTROLLER_GEN_DIR/controller-gen" crd paths=./pkg/apis/... output:crd:artifacts:config=manifests/crds
	mkdir -p charts/berth/crds charts/berth/files && cp manifests/crds/*.yaml charts/berth/crds/
	cp manifests/scheduler/berth-scheduler.yaml manifests/policies/workspace-template.yaml charts/berth/files/

.PHONY: lint
lint: ## Run the pinned golangci-lint with .golangci.yml over the tracked packages.
	bash hack/tools.sh golangci-lint
	$(TOOLS_ENV); "$$GOLANGCI_LINT_DIR/golangci-lint" run --config .golangci.yml $(LINT_PKGS)

.PHONY: verify
verify: ## Check gofmt, go vet, golangci-lint, go mod tidy and that generated files are current; fails on a dirty diff.
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed on: $$bad"; exit 1; fi
	$(GO) vet ./...
	$(MAKE) --no-print-directory lint
	$(GO) mod tidy -diff
	$(MAKE) --no-print-directory generate
	@git diff --exit-code -- pkg/apis manifests/crds charts/berth/crds charts/berth/files || { echo "generated files are stale: run make generate and commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- pkg/apis manifests/crds charts/berth/crds charts/berth/files); if [ -n "$$untracked" ]; then echo "untracked generated files: $$untracked"; exit 1; fi

.PHONY: build
build: ## Build berth's binaries into ./bin.
	$(GO) build -o $(BIN)/ ./cmd/... ./hack/localcluster

.PHONY: test
test: tools test-unit test-integration ## Run every test: unit, then integration on the local cluster, PostgreSQL and Azurite.

.PHONY: test-unit
test-unit: ## Run the unit tests (no cluster), with the race detector.
	$(GO) test -race $(TEST_FLAGS) $(UNIT_PKGS)

.PHONY: test-integration
test-integration: ## Run the integration tests on real local clusters (needs make tools), then print the numbers they report.
	@mkdir -p $(BIN) && rm -f $(BIN)/test-report.txt
	BERTH_TEST_REPORT=$(BIN)/test-report.txt $(GO) test -count=1 -timeout 30m $(TEST_FLAGS) $(INTEGRATION_PKGS)
	@if [ -s $(BIN)/test-report.txt ]; then echo; echo "reported by the tests:"; cat $(BIN)/test-report.txt; fi

.PHONY: bench
bench: tools ## Run the benchmarks on the local cluster, each side by side with the stock component in one run; one package at a time.
	$(GO) test -count=1 -p 1 -run '^$$' -bench . -benchtime 1x -timeout 45m $(TEST_FLAGS) ./test/bench/...

IMAGES := berth-blob berth-manager berth-meter berth-scheduler

.PHONY: images
images: ## Build berth's container images as tarballs in bin/images, with no container engine; docker load, kind load image-archive or crane push them.
	$(GO) build -o $(BIN)/ ./hack/image
	for b in $(IMAGES); do $(BIN)/image --binary $$b --out $(BIN)/images/$$b.tar; done

.PHONY: cluster-up
cluster-up: tools ## Start the local cluster with its fake node pools (CLUSTER_FLAGS="--spot-ssd=10 --gpu=2").
	$(GO) build -o $(BIN)/ ./hack/localcluster
	$(BIN)/localcluster up $(CLUSTER_FLAGS)

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and every process it started.
	$(GO) build -o $(BIN)/ ./hack/localcluster
	$(BIN)/localcluster down

.PHONY: demo
demo: ## Bring the local cluster up with berth running, place the reference load, print placement and cost, and the usage berth-meter recorded. AUTOSCALER=karpenter starts with no worker nodes and lets Karpenter launch and remove them.
ifeq ($(AUTOSCALER),karpenter)
	$(MAKE) --no-print-directory cluster-up CLUSTER_FLAGS="--spot-ssd=0 --on-demand=0 --gpu=0"
else
	$(MAKE) --no-print-directory cluster-up CLUSTER_FLAGS="$(or $(CLUSTER_FLAGS),--on-demand=48)"
endif
	$(GO) build -o $(BIN)/ ./cmd/berth-manager ./cmd/berth-meter ./cmd/berth-scheduler
	$(BIN)/localcluster demo $(if $(AUTOSCALER),--autoscaler=$(AUTOSCALER))

.PHONY: krew
krew: ## Package kubectl berth for krew: an archive per platform and the manifest rendered from .krew.yaml, in bin/krew (VERSION=v0.1.0).
	$(GO) run ./hack/krew --version $(or $(VERSION),v0.1.0) --out $(BIN)/krew

.PHONY: kind-up
kind-up: ## With Docker: create a kind cluster from kind-config.yaml, load berth's images (kind load image-archive) and install the chart (KIND_CLUSTER=berth, HELM_FLAGS=...).
	bash hack/kind.sh up

.PHONY: kind-down
kind-down: ## Delete the kind cluster make kind-up created.
	bash hack/kind.sh down

.PHONY: test-e2e
test-e2e: ## Run the end-to-end tests on E2E_PROVIDER=local (default: a local cluster with berth beside it) or kind (the cluster make kind-up made, berth from its chart).
	E2E_PROVIDER=$(or $(E2E_PROVIDER),local) $(GO) test -count=1 -timeout 20m $(TEST_FLAGS) ./test/e2e/...

.PHONY: bump-k8s
bump-k8s: ## Pin another Kubernetes release: make bump-k8s VERSION=v1.36.3.
	bash hack/bump-k8s.sh $(VERSION)

.PHONY: clean
clean: ## Remove ./bin (the tool cache outside the clone is kept).
	rm -rf $(BIN)
