# Run `make help` for the targets. Every tool is built from a pinned tools
# module under hack/tools/ into ${XDG_CACHE_HOME:-~/.cache}/openbao-restore,
# on first use (see hack/tool.sh).
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
export CGO_ENABLED ?= 0

VERSION ?= v0.1.0
BIN := bin/openbao-restore

# Every pinned tool and server the tests use (hack/tool.sh builds each once
# into the cache; a warm cache makes this a no-op).
TOOLS := crossplane crossplane-v1 cue controller-gen golangci-lint \
	etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok \
	openbao azurite seaweedfs fake-gcs-server crossplane-core registry

.PHONY: help
help: ## Show the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the binaries: the product (function, reconciler, executor) and the executor alone.
	go build -trimpath -o $(BIN) .
	go build -trimpath -o $(BIN)-executor ./cmd/openbao-restore-executor

.PHONY: render
render: ## Render the example restore with the real crossplane CLI against the function.
	hack/render.sh

.PHONY: generate
generate: ## Regenerate the XRD schema, CRDs and deepcopy code.
	go generate ./...

.PHONY: check-generated
check-generated: ## Fail when a generated file is stale or not committed (regenerates in a scratch copy).
	hack/check-generated.sh

.PHONY: xpkg
xpkg: ## Build the runtime image (buildah, no daemon) and the three Crossplane packages into _output/.
	hack/xpkg.sh $(VERSION)

.PHONY: image
image: xpkg ## Same as xpkg: the image is built into _output/image.tar.

.PHONY: tools
tools: ## Build (once, cached outside the clone) every pinned tool the tests use.
	hack/deps.sh
	@for t in $(TOOLS); do start=$$(date +%s); hack/tool.sh $$t >/dev/null; echo "tool $$t ready ($$(( $$(date +%s) - start ))s)"; done

.PHONY: lint
lint: ## golangci-lint (pinned).
	$$(hack/tool.sh golangci-lint) run ./...

.PHONY: vet
vet: ## go vet and go mod tidy check.
	go vet ./...
	go mod tidy -diff

.PHONY: test
test: tools vet lint check-generated ## Everything CI runs: vet, lint, generated files, and every test of every tier in one go test run.
	go test -count=1 -timeout 60m ./...

.PHONY: unit
unit: ## The unit tier: pure tests only, no servers or tools (go test -short), for the edit-test loop; results are cached, so only what changed runs again (make test vets).
	go test -short -vet=off ./...

.PHONY: integration
integration: tools ## The integration tier: every test but the end-to-end run (real apiserver, OpenBao, S3/GCS/Azure, crossplane CLIs).
	go test -count=1 -timeout 60m $$(go list ./... | grep -v '/test/e2e$$')

.PHONY: e2e
e2e: tools ## The end-to-end run: real Crossplane v2.4.0 installs the packages and runs every scenario (also part of make test).
	go test -count=1 -timeout 30m -v ./test/e2e/

.PHONY: demo
demo: tools ## The story of a real restore on the whole stack, a line per step (test/demo). SCENARIO=happy|missing-key|lock-contention|foreign-with-force, VERBOSE=1 shows the harness, KEEP=1 leaves it running with a KUBECONFIG line.
	KEEP=$(KEEP) go run ./test/demo --scenario $(or $(SCENARIO),happy) $(if $(filter 1,$(VERBOSE)),--verbose)

.PHONY: bench
bench: ## Run the function's benchmarks six times and summarise them with benchstat.
	mkdir -p _output
	go test -run='^$$' -bench=. -benchmem -count=6 ./fn/ | tee _output/bench-fn.txt
	$$(hack/tool.sh benchstat) _output/bench-fn.txt
