# postkit — see README.md.
GO      ?= go
BIN     := bin/postkit
PKGS    := ./...

# RSA signing through libcrypto (cgo, Debian libssl-dev) is ~3x faster than Go's;
# every go command here, and the binaries the tests build, use it.
export GOFLAGS := $(GOFLAGS) -tags=openssl

.PHONY: all build deb test unit e2e bench demo demo-stop check fmt vet fuzz deps clean

all: build

# The release version stamped into the binary (postkit version, build_info metric).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/postkit/postkit/internal/version.Version=$(VERSION)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/postkit

# The Debian package dist/postkit_<version>_<arch>.deb (binary, units, man pages,
# completions, examples), built by dpkg-deb.
deb:
	GO='$(GO)' VERSION='$(VERSION)' LDFLAGS='$(LDFLAGS)' scripts/build-deb.sh

# Every test: unit tests and the end-to-end suite against real Postfix and Dovecot.
# As root with POSTKIT_E2E=1 (CI), a missing Postfix/Dovecot fails instead of skipping.
# The fault test (daemons killed under load) runs last and verbose, so that its
# counts are in the output.
test: check build
	$(GO) test -count=1 -timeout 30m $$($(GO) list $(PKGS) | grep -v '/e2e/fault$$')
	$(GO) test -count=1 -timeout 10m -v ./e2e/fault

unit:
	$(GO) test -short -count=1 $(PKGS)

e2e: build
	POSTKIT_E2E=1 $(GO) test -count=1 -timeout 15m ./e2e/...

bench: build
	bench/run.sh

demo:
	scripts/demo.sh

demo-stop:
	scripts/demo-stop.sh

check: fmt vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# Every fuzz target of the module, found by itself, FUZZTIME (5s) each.
fuzz:
	GO=$(GO) scripts/fuzz.sh

deps:
	scripts/install-deps.sh

clean:
	rm -rf bin demo dist
