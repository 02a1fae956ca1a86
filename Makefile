# zoomerge — plain GNU make.  See README.md for the two set-up commands.

CFLAGS ?= -O2 -g
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=
PROGRAM_PREFIX ?=
PKG_CONFIG ?= pkg-config
CLANG ?= clang
FUZZ_SECONDS ?= 30
VERSION := 0.1.0

# BLIS 0.9 in Debian 12 ships no blis.pc; use it when a newer one does.
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
BLIS_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags blis 2>/dev/null || echo -I/usr/include/$(MULTIARCH))
BLIS_LIBS ?= $(shell $(PKG_CONFIG) --libs blis 2>/dev/null || echo -lblis)
DEP_CFLAGS := $(shell $(PKG_CONFIG) --cflags zlib yaml-0.1 2>/dev/null) $(BLIS_CFLAGS)
DEP_LIBS := $(shell $(PKG_CONFIG) --libs zlib yaml-0.1 2>/dev/null) $(BLIS_LIBS) -lm
CHECK_CFLAGS := $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

override CFLAGS += -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE \
	-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wvla -Icommon -DZM_VERSION='"$(VERSION)"'
# Each object records the headers it includes (build/**/*.d), so a change
# to one header rebuilds only what includes it.
DEPFLAGS := -MMD -MP
ifeq ($(DEVELOPER),1)
override CFLAGS += -Werror
endif

BUILD := build
ifeq ($(SANITIZE),1)
BUILD := build/san
override CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
override LDFLAGS += -fsanitize=address,undefined
endif

PROGRAMS := $(sort $(patsubst cmd/%.c,%,$(wildcard cmd/*.c)))
LIB_SRC := $(sort $(wildcard common/*.c))
LIB_OBJ := $(patsubst common/%.c,$(BUILD)/common/%.o,$(LIB_SRC))
LIB := $(BUILD)/libzoomerge.a
# The command-line plumbing (the only code that prints) is linked into the
# programs only, never into libzoomerge.a.
CLI_SRC := $(sort $(wildcard cmd/lib/*.c))
CLI_OBJ := $(patsubst cmd/lib/%.c,$(BUILD)/cmd/lib/%.o,$(CLI_SRC))
CLI_LIB := $(BUILD)/libzmcli.a
BINS := $(addprefix $(BUILD)/bin/,$(PROGRAMS))
UNIT_SRC := $(sort $(wildcard tests/unit/check_*.c))
UNIT_OBJ := $(patsubst tests/unit/%.c,$(BUILD)/tests/%.o,$(UNIT_SRC))
MAN1 := $(sort $(wildcard man/*.1))
MAN5 := $(sort $(wildcard man/*.5))
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
BENCH_SRC := $(sort $(wildcard tests/bench/bench_*.c))

.PHONY: all check check-container check-unit check-cli deps deps-bench demo bench install \
	uninstall clean lint-man valgrind fuzz fuzz-build

all: $(BINS)

$(BUILD)/common/%.o: common/%.c $(BUILD)/common/%.d | $(BUILD)/common
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) $(DEP_CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/cmd/lib/%.o: cmd/lib/%.c $(BUILD)/cmd/lib/%.d | $(BUILD)/cmd/lib
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) $(DEP_CFLAGS) -Icmd/lib -c -o $@ $<

$(CLI_LIB): $(CLI_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

# The programs run threads (merge's workers): -pthread when compiling and
# linking, not a bare -lpthread.
$(BUILD)/bin/%: cmd/%.c $(BUILD)/bin/%.d $(CLI_LIB) $(LIB) | $(BUILD)/bin
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) $(DEP_CFLAGS) -Icmd/lib -pthread \
		$(LDFLAGS) -o $@ $< $(CLI_LIB) $(LIB) $(DEP_LIBS)

$(BUILD)/common $(BUILD)/cmd/lib $(BUILD)/bin $(BUILD)/tests $(BUILD)/fuzz $(BUILD)/bench:
	mkdir -p $@

# The unit runner learns the suites from the file names: check_NAME.c
# exports Suite *suite_NAME(void).
$(BUILD)/tests/suites.h: $(UNIT_SRC) | $(BUILD)/tests
	for f in $(UNIT_SRC); do n=$${f##*/check_}; echo "ZM_SUITE($${n%.c})"; done > $@.tmp
	mv $@.tmp $@

$(BUILD)/tests/%.o: tests/unit/%.c $(BUILD)/tests/%.d $(BUILD)/tests/suites.h | $(BUILD)/tests
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) $(DEP_CFLAGS) $(CHECK_CFLAGS) -Itests/unit -I$(BUILD)/tests -c -o $@ $<

$(BUILD)/tests/runner: tests/unit/runner.c $(BUILD)/tests/suites.h $(UNIT_OBJ) $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) $(DEP_CFLAGS) $(CHECK_CFLAGS) -Itests/unit \
		-I$(BUILD)/tests -pthread $(LDFLAGS) -o $@ tests/unit/runner.c $(UNIT_OBJ) \
		$(LIB) $(CHECK_LIBS) $(DEP_LIBS)

# Dependencies are installed (as root, through apt-get) only when missing.
deps:
	@scripts/install-deps

deps-bench:
	@scripts/install-deps --bench

check: deps
	@$(MAKE) --no-print-directory all $(BUILD)/tests/runner
	@ZM_BIN=$(CURDIR)/$(BUILD)/bin ZM_SRCDIR=$(CURDIR) sh tests/check.sh $(CURDIR)/$(BUILD)/tests/runner

# The image built with podman and every Job's pod run in it on a small data
# set (scripts/install-deps --container installs podman); exits 77 with the
# reason when this host cannot run containers.  See README.md.
check-container: deps
	@sh tests/k8s/check-container

check-unit: $(BUILD)/tests/runner
	cd tests/unit && ZM_SRCDIR=$(CURDIR) $(CURDIR)/$(BUILD)/tests/runner

check-cli: $(BINS)
	LC_ALL=C ZM_BIN=$(CURDIR)/$(BUILD)/bin ZM_SRCDIR=$(CURDIR) sh tests/cli/run.sh

# CLI tests with every program run under valgrind (leaks are errors).
valgrind: deps $(BINS)
	rm -rf $(BUILD)/vgbin && mkdir -p $(BUILD)/vgbin
	for p in $(PROGRAMS); do \
		printf '#!/bin/sh\nexec valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect "%s" "$$@"\n' \
			"$(CURDIR)/$(BUILD)/bin/$$p" > $(BUILD)/vgbin/$$p; \
		chmod +x $(BUILD)/vgbin/$$p; done
	LC_ALL=C ZM_BIN=$(CURDIR)/$(BUILD)/vgbin ZM_SRCDIR=$(CURDIR) ZM_VALGRIND=1 sh tests/cli/run.sh

lint-man:
	@command -v mandoc >/dev/null || scripts/install-deps
	mandoc -T lint -W warning $(MAN1) $(MAN5)

# libFuzzer targets: the library is rebuilt once with clang, coverage and
# the sanitizers, then linked into each target.
FUZZ_CFLAGS := -g -O1 -fsanitize=address,undefined -Icommon \
	-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -DZM_VERSION='"$(VERSION)"'
FUZZ_OBJ := $(patsubst common/%.c,build/fuzz/obj/%.o,$(LIB_SRC))
fuzz-build: $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))

build/fuzz/obj/%.o: common/%.c build/fuzz/obj/%.d
	@mkdir -p build/fuzz/obj
	$(CLANG) $(FUZZ_CFLAGS) $(DEPFLAGS) -fsanitize=fuzzer-no-link $(DEP_CFLAGS) -c -o $@ $<

build/fuzz/libzoomerge-fuzz.a: $(FUZZ_OBJ)
	rm -f $@
	$(AR) rcs $@ $^

build/fuzz/%: tests/fuzz/%.c build/fuzz/libzoomerge-fuzz.a
	$(CLANG) $(FUZZ_CFLAGS) $(DEPFLAGS) -fsanitize=fuzzer $(DEP_CFLAGS) -pthread -o $@ $< \
		build/fuzz/libzoomerge-fuzz.a $(DEP_LIBS)

fuzz: deps fuzz-build
	@set -e; for f in $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC)); do \
		mkdir -p build/fuzz/corpus-$$f; \
		echo "fuzz: $$f for $(FUZZ_SECONDS) s"; \
		build/fuzz/$$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
			-print_final_stats=1 build/fuzz/corpus-$$f tests/fuzz/corpus/$${f#fuzz_} \
			2>build/fuzz/$$f.log || { tail -50 build/fuzz/$$f.log; exit 1; }; \
		grep -E 'stat::number_of_executed_units|Done' build/fuzz/$$f.log | tail -2; \
	done

$(BUILD)/bench/%: tests/bench/%.c $(LIB) | $(BUILD)/bench
	$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) $(DEP_CFLAGS) -pthread $(LDFLAGS) -o $@ $< $(LIB) $(DEP_LIBS)

bench: deps-bench
	@$(MAKE) --no-print-directory all $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
	ZM_BIN=$(CURDIR)/$(BUILD)/bin ZM_BENCH=$(CURDIR)/$(BUILD)/bench ZM_SRCDIR=$(CURDIR) sh tests/bench/run.sh

demo: deps
	@$(MAKE) --no-print-directory all
	ZM_BIN=$(CURDIR)/$(BUILD)/bin sh scripts/demo

install: all
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	for p in $(PROGRAMS); do \
		install -m 755 $(BUILD)/bin/$$p $(DESTDIR)$(BINDIR)/$(PROGRAM_PREFIX)$$p; done
	for m in $(MAN1); do b=$${m##*/}; \
		install -m 644 $$m $(DESTDIR)$(MANDIR)/man1/$(PROGRAM_PREFIX)$$b; done
	for m in $(MAN5); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man5/; done
	install -m 755 scripts/k8s-jobs $(DESTDIR)$(BINDIR)/$(PROGRAM_PREFIX)k8s-jobs
	install -m 755 scripts/zm-stage $(DESTDIR)$(BINDIR)/$(PROGRAM_PREFIX)zm-stage

uninstall:
	for p in $(PROGRAMS) k8s-jobs zm-stage; do rm -f $(DESTDIR)$(BINDIR)/$(PROGRAM_PREFIX)$$p; done
	for m in $(MAN1); do rm -f $(DESTDIR)$(MANDIR)/man1/$(PROGRAM_PREFIX)$${m##*/}; done
	for m in $(MAN5); do rm -f $(DESTDIR)$(MANDIR)/man5/$${m##*/}; done

clean:
	rm -rf build

# An object whose dependency file is missing (built before -MMD, or the
# file removed) is rebuilt: without it make would not know its headers and
# could link an object compiled against an older struct layout.  The empty
# rule lets a missing .d count as out of date instead of an error.
DEP_FILES := $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(BINS:=.d) $(UNIT_OBJ:.o=.d) \
	$(FUZZ_OBJ:.o=.d)
$(DEP_FILES):

# The header dependencies recorded by -MMD (absent before the first build).
-include $(wildcard $(BUILD)/common/*.d $(BUILD)/cmd/lib/*.d $(BUILD)/bin/*.d \
	$(BUILD)/tests/*.d $(BUILD)/bench/*.d build/fuzz/obj/*.d build/fuzz/*.d)
