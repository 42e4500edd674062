# phonefleet developer tasks. `make` alone lists them.
SHELL := /bin/bash
CARGO ?= cargo

.DEFAULT_GOAL := help

help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

demo: ## Run the product end to end: control plane, controller, server, 600 simulated phones (IN_CLUSTER=1: controller in the cluster, as root).
	IN_CLUSTER=$(IN_CLUSTER) scripts/demo.sh

tools: ## Build etcd, kube-apiserver, kube-controller-manager, kubectl and helm from source (cached).
	tests/cluster/build.sh

cluster: ## Start the local control plane in .cluster/ (NODE=1: and a node, as root) and print how to use it.
	@PHONEFLEET_NODE=$(NODE) tests/cluster/up.sh >/dev/null
	@echo "Control plane running. Point kubectl at it with:"
	@echo "  source .cluster/env    # sets KUBECONFIG and puts kubectl/helm on PATH"
	@echo "Stop it with: make cluster-down"

cluster-down: ## Stop the local control plane (and its node) started by `make cluster`.
	tests/cluster/down.sh

image: ## Build the phonefleet image without Docker; load it into the node of `make cluster NODE=1` if one runs.
	@set -euo pipefail; out=$$(scripts/build-image.sh | tail -n 1); echo "$$out"; \
	if [ -f .cluster/node/ready ]; then tests/cluster/load-image.sh .cluster "$${out##* }"; fi

cluster-status: ## Say whether the local control plane is up.
	tests/cluster/status.sh .cluster

fmt: ## Format the Rust code.
	$(CARGO) fmt

lint: ## Check formatting and run clippy with warnings as errors.
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings

generate: ## Regenerate the CRD YAML in crds/ from the Rust types (and the chart's copy).
	$(CARGO) run --quiet -- crd --out-dir crds
	rm -f charts/phonefleet/crds/*.yaml && cp crds/*.yaml charts/phonefleet/crds/

test: lint ## Lint, unit and property tests, then integration tests on a fresh local control plane.
	tests/cluster/build.sh >/dev/null
	tests/cluster/with-cluster.sh $(CARGO) test --all-targets --features simulated-time --no-fail-fast

bench: ## Run the criterion benchmarks.
	$(CARGO) bench

.PHONY: help demo tools cluster cluster-down cluster-status image fmt lint generate test bench
