# stackcopy — see README.md. `make demo` and `make test` need root (network
# namespaces, TUN devices); as another user they re-run themselves through sudo.

GO        ?= go
BIN       := bin
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
export CGO_ENABLED := 0

.PHONY: all build test unit lab lab-race check demo bench soak fuzz clean install image

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/stackcopy ./cmd/stackcopy
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/intercept ./cmd/intercept
	$(GO) build -trimpath -o $(BIN)/recorder ./netns-tests/cmd/recorder

ifneq ($(shell id -u),0)
test demo bench lab lab-race soak:
	@echo "make $@ needs root (network namespaces, veth, TUN); re-running through sudo"
	sudo env "PATH=$$PATH" "HOME=$$HOME" "GOPATH=$$($(GO) env GOPATH)" "GOCACHE=$$($(GO) env GOCACHE)" "GOMODCACHE=$$($(GO) env GOMODCACHE)" $(MAKE) $@
else
# Everything: static checks, unit tests (race detector), then the lab.
test: check unit lab

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v /netns-tests)

lab: build
	$(GO) test -count=1 -timeout 25m -v ./netns-tests/...

demo: build
	$(GO) run ./netns-tests/cmd/demo -stackcopy $(BIN)/stackcopy -recorder $(BIN)/recorder

bench: build
	$(GO) run ./netns-tests/cmd/bench -stackcopy $(BIN)/stackcopy -recorder $(BIN)/recorder -intercept $(BIN)/intercept $(if $(TCPCOPY),-tcpcopy $(TCPCOPY)/sbin/tcpcopy -tcpcopy-intercept $(TCPCOPY)/sbin/intercept)
	$(GO) run ./netns-tests/cmd/protobench
	@echo "dial cost from a new forged client while others hold sessions (gVisor patch 0003: was 1.1 ms at 5000 open)"
	$(GO) test -run '^$$' -bench DialWithOpenClients -benchtime 2000x ./netstack

# Lab runs beyond what make test asserts: the live upload under loss with
# the client unthrottled (most of it waits in the session's spill file; see
# TestLiveUploadWithLoss).
# The lab with stackcopy and intercept built with the race detector; a race
# stops the program at once (GORACE halt_on_error), which fails its test.
lab-race: build
	STACKCOPY_LAB_RACE=1 GORACE="halt_on_error=1" $(GO) test -count=1 -timeout 40m -v ./netns-tests/...

soak: build
	STACKCOPY_UPLOAD_RATE=0 $(GO) test -count=1 -timeout 30m -v -run 'LiveUploadWithLoss' ./netns-tests/...
endif

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) mod tidy -diff


# Every decoder and framer, FUZZTIME each (make fuzz FUZZTIME=10s for a quick pass).
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./capture/ -run XXX -fuzz '^FuzzOpenFile$$' -fuzztime $(FUZZTIME)
	$(GO) test ./session/ -run XXX -fuzz '^FuzzTracker$$' -fuzztime $(FUZZTIME)
	$(GO) test ./relay/ -run XXX -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZTIME)
	$(GO) test ./relay/ -run XXX -fuzz '^FuzzHandshake$$' -fuzztime $(FUZZTIME)
	$(GO) test ./relay/ -run XXX -fuzz '^FuzzDeliver$$' -fuzztime $(FUZZTIME)
	$(GO) test ./httpframe/ -run XXX -fuzz '^FuzzResponses$$' -fuzztime $(FUZZTIME)
	$(GO) test ./httpframe/ -run XXX -fuzz '^FuzzRequests$$' -fuzztime $(FUZZTIME)
	$(GO) test ./h2frame/ -run XXX -fuzz '^FuzzFramer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./h2frame/ -run XXX -fuzz '^FuzzFrames$$' -fuzztime $(FUZZTIME)
	$(GO) test ./respframe/ -run XXX -fuzz '^FuzzServer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./respframe/ -run XXX -fuzz '^FuzzClient$$' -fuzztime $(FUZZTIME)
	$(GO) test ./mcframe/ -run XXX -fuzz '^FuzzServer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./mcframe/ -run XXX -fuzz '^FuzzSession$$' -fuzztime $(FUZZTIME)
	$(GO) test ./myframe/ -run XXX -fuzz '^FuzzFramer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./myframe/ -run XXX -fuzz '^FuzzOracleGoSQLDriver$$' -fuzztime $(FUZZTIME)
	$(GO) test ./myframe/ -run XXX -fuzz '^FuzzDetect$$' -fuzztime $(FUZZTIME)
	$(GO) test ./myframe/ -run XXX -fuzz '^FuzzRenumber$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pgframe/ -run XXX -fuzz '^FuzzFramer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pgframe/ -run XXX -fuzz '^FuzzClientOracle$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pgframe/ -run XXX -fuzz '^FuzzServerOracle$$' -fuzztime $(FUZZTIME)
	$(GO) test ./pgframe/ -run XXX -fuzz '^FuzzConversation$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/ -run XXX -fuzz '^FuzzChunking$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/ -run XXX -fuzz '^FuzzFingerprint$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/cmphttp/ -run XXX -fuzz '^FuzzHTTP1$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/cmphttp/ -run XXX -fuzz '^FuzzHTTP2$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/cmpresp/ -run XXX -fuzz '^FuzzRESP$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/cmpmc/ -run XXX -fuzz '^FuzzMemcached$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/cmpmysql/ -run XXX -fuzz '^FuzzMySQL$$' -fuzztime $(FUZZTIME)
	$(GO) test ./compare/cmppg/ -run XXX -fuzz '^FuzzPostgres$$' -fuzztime $(FUZZTIME)

# Installs both programs, the hardened systemd units (their paths follow
# PREFIX) and example flag files (kept if present). DESTDIR for packaging:
# make install DESTDIR=/tmp/pkg PREFIX=/usr
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= /etc/systemd/system
SYSCONFDIR ?= /etc
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/default
	install -d -m 0700 $(DESTDIR)$(SYSCONFDIR)/stackcopy
	install -m 0755 $(BIN)/stackcopy $(BIN)/intercept $(DESTDIR)$(BINDIR)/
	for u in stackcopy intercept; do \
		sed 's#/usr/local/bin/#$(BINDIR)/#' deploy/systemd/$$u.service > $(DESTDIR)$(UNITDIR)/$$u.service && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service && \
		{ [ -e $(DESTDIR)$(SYSCONFDIR)/default/$$u ] || install -m 0644 deploy/systemd/$$u.default $(DESTDIR)$(SYSCONFDIR)/default/$$u; }; \
	done
	@echo "installed; next: a key in $(SYSCONFDIR)/stackcopy/relay.key (mode 0600), flags in $(SYSCONFDIR)/default/{stackcopy,intercept}, then stackcopy doctor / intercept doctor, systemctl daemon-reload"

# An OCI image with both static binaries, built without a container daemon
# and without pulling a base image (deploy/mkimage); IMAGE_OUT is an OCI
# layout directory, or a docker-save tarball when it ends in .tar.
IMAGE_OUT ?= $(BIN)/image.tar
IMAGE_TAG ?= stackcopy:$(VERSION)
image: build
	$(GO) run ./deploy/mkimage -stackcopy $(BIN)/stackcopy -intercept $(BIN)/intercept -tag $(IMAGE_TAG) -o $(IMAGE_OUT)

clean:
	rm -rf $(BIN)
