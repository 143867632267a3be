# karn: the two commands at the top of README.md, plus benchmarks and lint.
#   make example   install karn if needed (a `karn` command: in .venv unless python3
#                  already imports this checkout), build examples/hello.c, run it under karn
#   make test      install what the tests need (only what is missing), run pytest: every
#                  test, on TEST_JOBS workers (pytest-xdist; tests marked serial run alone),
#                  then EXIT_MODE_TESTS again with --syscall-transport exit
#   make test-quick  the same without the tests marked slow (> ~10 s each) or breadth (many
#                  similar cases): the edit loop, about 2 minutes on a quiet 2-core machine
#   make bench     run the benchmarks (python3 bench/run.py; BENCH_ARGS="--runs 9 --write")
#   make lint      ruff check and mypy (the type checker) on karn/
#   make vdso      rebuild karn/platform/vdso/vdso.so (committed; needs gcc and binutils)

PYTHON ?= python3
APT_PACKAGES := gcc libc6-dev binutils musl-tools busybox-static \
	docker-registry skopeo umoci apache2-utils golang-go python3 gdb strace \
	nginx redis-server redis-tools wrk curl graphviz
BENCH_ARGS ?=
TEST_JOBS ?= auto
VENV ?= .venv
RUNTIME_MODULES := karn, karn.cli.main, elftools, capstone, jsonschema, re2
# karn's C helpers (setup.py ext_modules): a checkout updated since its editable install
# may have a helper its build does not, so `install` runs pip again to build it
C_HELPERS := karn.platform.fastcall._fastpoll, karn.kernel.fs._hostcalls
# The Python that runs karn: $(PYTHON) when it already imports this checkout's karn from
# outside the repository directory (`pip install -e .` done, as CI does), else a venv in
# $(VENV), made on first use (PEP 668: Debian's python3 refuses a system-wide pip install).
THIS_KARN := import os, sys, karn; sys.exit(os.path.realpath(karn.__path__[0]) != \
	os.path.realpath("$(CURDIR)/karn"))
ifeq ($(shell cd / && $(PYTHON) -c '$(THIS_KARN)' 2>/dev/null && echo yes),yes)
KARN_PYTHON := $(PYTHON)
else
KARN_PYTHON := $(abspath $(VENV))/bin/python
endif
# Editable installs in setuptools' compat mode: a path in a .pth file. Its default mode's
# import finder, set up at every interpreter start, imports re, pathlib and more: ~18 ms
# more for every `karn` command (and every python3) than the run itself imports.
EDITABLE := --config-settings editable_mode=compat
NO_FINDER := import sys; sys.exit(any(m.startswith("__editable___karn") for m in sys.modules))
# The `karn` command pip installed for KARN_PYTHON (looked up once it is installed)
KARN = $(shell cd / && $(KARN_PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/karn
PYTEST := $(KARN_PYTHON) -m pytest -q -n $(TEST_JOBS) --dist loadscope
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Run again with every syscall a VM exit (the fast transport off): threads, signals, crash
# reports, tracing, gdb, core dumps and the policy must hold in both transports (issue 14)
EXIT_MODE_TESTS := $(addprefix tests/,test_threads.py test_signals.py test_crash.py \
	test_crash_report.py test_trace.py test_gdb.py test_core.py test_policy.py)

.PHONY: all example test test-quick bench lint install install-test-deps clean vdso
all: test

# Install the package (editable) unless this checkout's karn and its dependencies import.
install: $(if $(filter $(abspath $(VENV))/%,$(KARN_PYTHON)),$(abspath $(VENV))/bin/python)
	@# (again when the karn command is an older one: pip's entry-point script, which
	@# imports re, or one naming an older entry point than karn.cli.entry; bin/karn; or
	@# when the install is an editable one with an import finder: EDITABLE)
	@cd / && $(KARN_PYTHON) -c 'import $(RUNTIME_MODULES), $(C_HELPERS); $(THIS_KARN)' 2>/dev/null \
	  && $(KARN_PYTHON) -c '$(NO_FINDER)' \
	  && grep -qs 'karn.cli.entry' '$(KARN)' && ! grep -qs '^import re$$' '$(KARN)' \
	  || $(KARN_PYTHON) -m pip install -q -e '$(CURDIR)' $(EDITABLE)
	@# bytecode, as a wheel install has: an editable one has none, and where
	@# PYTHONDONTWRITEBYTECODE is set every `karn run` would compile karn's sources again
	@$(KARN_PYTHON) -m compileall -q '$(CURDIR)/karn'
	@# the command line's bundle of karn's modules (karn/cli/bytecode.py): ~2 ms less start-up
	@cd / && $(KARN_PYTHON) -m karn.cli.bundle >/dev/null
	@test -x "$(KARN)" || { echo "karn: no karn command in $(dir $(KARN))"; exit 1; }

# The venv (Debian's python3 needs python3-venv for ensurepip)
$(abspath $(VENV))/bin/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q python3-venv; }
	$(PYTHON) -m venv $(VENV)

examples/hello: examples/hello.c
	@command -v gcc >/dev/null || $(MAKE) --no-print-directory install-test-deps
	gcc -O2 -o $@ $<

example: install examples/hello
	$(KARN) run examples/hello
	@case "$(KARN)" in "$(abspath $(VENV))"/*) \
	  echo "karn is $(KARN): add $(dir $(KARN)) to PATH, or run '. $(VENV)/bin/activate'";; esac

# apt only when a tool is missing; pip only when pytest or karn is missing.
install-test-deps: install
	@missing=""; \
	for tool in gcc musl-gcc nm docker-registry skopeo umoci htpasswd go gdb strace nginx redis-server redis-cli wrk curl dot; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	[ -x /bin/busybox ] || missing="$$missing busybox"; \
	[ -x /usr/bin/python3 ] || missing="$$missing python3"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(APT_PACKAGES); \
	fi
	@$(KARN_PYTHON) -c 'import pytest, xdist, cryptography, hypothesis, $(RUNTIME_MODULES)' 2>/dev/null \
	  || $(KARN_PYTHON) -m pip install -q -e '.[test]' $(EDITABLE)

test: install-test-deps
	$(PYTEST)
	KARN_SYSCALL_TRANSPORT=exit $(PYTEST) $(EXIT_MODE_TESTS)

test-quick: install-test-deps
	$(PYTEST) -m "not slow and not breadth"

bench: install
	$(KARN_PYTHON) bench/run.py $(BENCH_ARGS)

lint: install
	@$(KARN_PYTHON) -c 'import ruff, mypy' 2>/dev/null || $(KARN_PYTHON) -m pip install -q -e '.[lint]' $(EDITABLE)
	$(KARN_PYTHON) -m ruff check karn tests bench
	$(KARN_PYTHON) -m mypy

# The guest's vDSO (docs/design/fast-syscalls.md, section 6): freestanding, no relocations,
# unwind tables kept. The image is committed as package data, so installs need no compiler.
VDSO_DIR := karn/platform/vdso
VDSO_CFLAGS := -O2 -fPIC -fno-stack-protector -fasynchronous-unwind-tables \
	-fcf-protection=none -ffreestanding -fno-builtin -nostdlib -shared -Wall -Wextra -Werror
VDSO_LDFLAGS := -Wl,--hash-style=both -Wl,-soname=linux-vdso.so.1 -Wl,--eh-frame-hdr \
	-Wl,--version-script=$(VDSO_DIR)/vdso.map -Wl,-T,$(VDSO_DIR)/vdso.lds -Wl,--no-undefined \
	-Wl,--build-id=none -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack
vdso: $(VDSO_DIR)/vdso.so
$(VDSO_DIR)/vdso.so: $(VDSO_DIR)/vdso.c $(VDSO_DIR)/vdso.lds $(VDSO_DIR)/vdso.map
	gcc $(VDSO_CFLAGS) $(VDSO_LDFLAGS) -o $@.tmp $(VDSO_DIR)/vdso.c
	strip --strip-all -o $@ $@.tmp
	rm -f $@.tmp

clean:
	rm -f examples/hello
