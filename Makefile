# FlexiMigrate: the two commands a user needs.
#   make demo   set up, build, migrate a running container between two namespace hosts
#   make demo-fabric  the same across an Open vSwitch fabric, the switch following the container
#   make check  set up, build with -Werror, unit tests (also under ASan+UBSan), e2e tests
#   make vm-check  the VM harness's smoke test (Debian 12 kernel under QEMU: soft-dirty)
#   make fuzz   libFuzzer on the policy parsers (CONDITIONS, whole files) and the OpenFlow decoder (10 minutes each; needs clang)
# Each runs scripts/setup.sh first (idempotent; root required).

BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all setup build demo demo-fabric check unit e2e vm-check bench fuzz clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) --werror

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: setup build
	demo/demo.sh

demo-fabric: setup build
	demo/fabric.sh

check: setup
	scripts/check.sh

unit: build
	meson test -C $(BUILD) --print-errorlogs

e2e: build
	/usr/bin/python3 -m pytest -v tests/e2e

vm-check: setup build
	tests/vm/run tests/vm/smoke.sh

bench: setup build
	bench/run

# libFuzzer on the policy CONDITIONS parser for 10 minutes (FUZZ_SECONDS=N)
fuzz:
	tests/fuzz/run $(or $(FUZZ_SECONDS),600)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
