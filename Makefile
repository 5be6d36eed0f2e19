# ambassadord build, test and packaging. `make test` is what CI runs
# (.ci/run); it needs Go, a Docker Engine and Debian's redis-server and
# redis-tools (packed into the e2e redis fixture image), which `make setup`
# (.ci/setup) installs when missing.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
IMAGE   ?= ambassadord:latest
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
DOCKER  ?= docker

# Must stay below the sweep age in e2e/main_test.go (staleAfter, 30m), so a
# run never sweeps a concurrent run's containers.
E2E_TIMEOUT ?= 20m

LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all setup build test unit fuzz e2e soak image demo lint clean

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ambassadord ./cmd/ambassadord

# Installs what is missing (Debian packages, dockerd) so that `make test`
# and `make demo` work on a fresh machine; quick when nothing is missing.
setup:
	.ci/setup

test: setup
	$(MAKE) unit
	$(MAKE) fuzz
	$(MAKE) e2e

# Under -race and without it: some assertions hold only without the race
# detector's overhead (the proxy's per-connection stack bound), and the
# plain run is fast.
unit:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 ./...

# Every fuzz target of a parser of user input (routes, classic variables, health checks,
# labels, /proc and link formats, a client's PROXY header), FUZZTIME each, on top of their seed
# corpora that `make unit` runs. FUZZTIME is a count of inputs, not a
# duration: Go 1.26's coordinator can fail a duration run with a bare
# "context deadline exceeded" when a worker on a loaded machine misses the
# deadline (go.dev/issue/75804, fixed in Go 1.27); a count has no deadline.
FUZZTIME ?= 20000x
fuzz:
	@set -e; for pkg in ./pkg/resolver ./pkg/watcher ./pkg/proxy ./pkg/source; do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
			out=$$($(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg 2>&1) || { echo "$$out"; exit 1; }; \
		done; \
	done

e2e:
	$(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./e2e/...

# The churn soak (e2e/soak_test.go) alone, with SOAK of chaos instead of
# the 40 s `make e2e` runs; AMBASSADORD_SOAK_SEED=N replays a logged seed.
# The test refuses a SOAK over 25m, which with its set-up would outlive the
# sweep age (staleAfter, 30m) that protects a run from concurrent ones.
SOAK ?= 10m
soak: setup
	AMBASSADORD_SOAK=$(SOAK) $(GO) test -tags e2e -count=1 -v -run '^TestSoak$$' -timeout 30m ./e2e/

# The context is just the Dockerfile and the binary, sent as a tar on
# stdin: nothing else of the repository reaches the daemon.
image: build
	tar -cf - Dockerfile bin/ambassadord | $(DOCKER) build --build-arg VERSION=$(VERSION) -t $(IMAGE) -

demo: setup
	$(GO) run ./e2e/cmd/demo

lint:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt needed on:"; echo "$$unformatted"; exit 1; \
	fi

# Removes every container, network and image the e2e tests, the demo or the
# benchmark created, from any run (it matches the label key, not a run ID).
clean:
	rm -rf bin/
	@if command -v $(DOCKER) >/dev/null 2>&1 && $(DOCKER) info >/dev/null 2>&1; then \
		for label in ambassadord.e2e ambassadord.demo ambassadord.bench; do \
			$(DOCKER) ps -aq --filter label=$$label | xargs -r $(DOCKER) rm -f -v >/dev/null; \
			$(DOCKER) network ls -q --filter label=$$label | xargs -r $(DOCKER) network rm >/dev/null; \
			$(DOCKER) images -q --filter label=$$label | sort -u | xargs -r $(DOCKER) rmi -f >/dev/null; \
		done; \
	fi

# Side-by-side benchmark (issue 5): direct, socat, HAProxy and ambassadord
# on loopback, plus rewiring with real containers; prints one markdown
# table. Under 10 minutes; QUICK=1 is one round with small counts (CI).
# BASELINE=<git revision> (e.g. HEAD~1) adds the ambassadord of that
# revision, built from `git archive`, as a column measured in the same
# interleaved rounds and rewires, with ambassadord's ratio to it.
BASELINE ?=
.PHONY: bench
bench: build
	bench/setup.sh
	PATH="$(dir $(GO)):$$PATH" GO=$(GO) $(GO) run ./bench -ambassadord bin/ambassadord $(if $(QUICK),-quick) $(if $(BASELINE),-baseline-rev $(BASELINE))
