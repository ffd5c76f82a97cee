# tollgate: one non-recursive Makefile.  Objects live under $(B), so the
# sanitizer builds (build/asan, build/tsan) never mix with the plain one.

B        ?= build
PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= cc
OBJCOPY  ?= objcopy
CFLAGS   ?= -O2 -g
WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	    -Wpointer-arith -Wcast-qual -Wwrite-strings -Wformat=2 -Wvla \
	    -Wundef -Werror
override CPPFLAGS += -D_GNU_SOURCE -Iinclude -Ilibclient -Ibroker \
		     -DTG_VERSION='"$(VERSION)"'
override CFLAGS   += -std=c11 -fPIC $(WARN) $(SAN) -MMD -MP
override LDFLAGS  += $(SAN)

SOVER     = 0
VERSION   = 0.2.0
# Build and test dependencies; python3 reads tollstat -j in the tests and
# runs the binding's tests (python3-httpx: the README's worker runs for
# real), prometheus brings promtool, which checks tollstat -p, man-db and
# groff-base render the man pages test_man checks; hiredis and
# redis-server are the Redis alternative tollbench measures against;
# curl runs the README's tollrun pipeline (test_tollrun).
PKGS      = liburing-dev libbsd-dev libinih-dev libcmocka-dev pkg-config \
	    python3 python3-httpx prometheus man-db groff-base \
	    libhiredis-dev redis-server curl
LIBS      = -linih -luring -lbsd -lpthread
# The broker's federation (broker/fed.c) talks to Redis.
BROKER_LIBS = -lhiredis -lm
# Debian's interpreter, which sees Debian's python3-* packages.
PYTHON   ?= /usr/bin/python3
# Where it looks for packages: /usr/lib/python3/dist-packages for
# PREFIX=/usr, $(PREFIX)/lib/python3.X/dist-packages otherwise.
PYVER    := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % \
	    sys.version_info[:2])' 2>/dev/null)
PYDIR    ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/python3/dist-packages,$\
	    $(PREFIX)/lib/python$(PYVER)/dist-packages)

# The Node.js package (libclient/node): where `make install' puts it, as
# npm's global packages, and its files.  node and npm come from Debian
# when missing (deps: by command, so that another vendor's node counts).
NODEDIR  ?= $(PREFIX)/lib/node_modules
NODE_TOP  = $(addprefix libclient/node/,package.json package-lock.json \
	    index.js index.d.ts)
NODE_LIB  = $(wildcard libclient/node/lib/*.js)
NODE_PKG  = $(NODE_TOP) $(NODE_LIB)

# The library: the hot path and what it needs, nothing of the broker.
LIB_SRCS  = libclient/client.c libclient/seg.c libclient/clock.c \
	    libclient/gcra.c \
	    libclient/window.c libclient/lease.c libclient/headers.c \
	    libclient/srvcap.c libclient/feedback.c
# Shared by broker, tools and tests, never in the library: the config
# file (the broker's, which tollsim reads too), one limit's syntax, and
# what the tools say of a segment they cannot use (access.c).
INT_SRCS  = broker/config.c libclient/limit.c libclient/access.c
BROKER_SRCS = $(filter-out $(INT_SRCS),$(wildcard broker/*.c))
TEST_SRCS = $(wildcard tests/test_*.c tests/mp_*.c)
TEST_HELP = tests/helpers.c
FUZZ_SRCS = $(wildcard tests/fuzz/fuzz_*.c)

LIB_OBJS  = $(LIB_SRCS:%.c=$(B)/%.o)
INT_OBJS  = $(INT_SRCS:%.c=$(B)/%.o)
BROKER_OBJS = $(BROKER_SRCS:%.c=$(B)/%.o)
TESTS     = $(TEST_SRCS:tests/%.c=$(B)/tests/%)
TOOL_SRCS = $(wildcard tools/*.c)
# Names man/tollgate.3 answers to (man tg_acquire).
MANLINKS  = tg_open tg_close tg_key tg_try_acquire tg_acquire tg_reserve \
	    tg_ready \
	    tg_observe tg_settle tg_release tg_strerror
TOOLS     = $(TOOL_SRCS:tools/%.c=$(B)/%)
STAT_SRCS = $(wildcard tools/stat/*.c)
# tollbench: measured, never installed.
BENCH_SRCS = $(wildcard tools/bench/*.c)

ALL_OBJS  = $(LIB_OBJS) $(INT_OBJS) $(BROKER_OBJS) \
	    $(TEST_SRCS:%.c=$(B)/%.o) $(TEST_HELP:%.c=$(B)/%.o) \
	    $(TOOL_SRCS:%.c=$(B)/%.o) $(FUZZ_SRCS:%.c=$(B)/%.o) \
	    $(B)/tests/fuzz/replay.o $(BENCH_SRCS:%.c=$(B)/%.o) \
	    $(STAT_SRCS:%.c=$(B)/%.o) $(LIB_SRCS:%.c=$(B)/casstat/%.o)

.PHONY: all deps run test bench asan tsan fuzz install uninstall clean
# Keep test objects: they are intermediate, and make would delete them.
.SECONDARY:

all: $(B)/libtollgate.a $(B)/libtollgate.so $(B)/tollgated $(TOOLS)

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# The library's objects as they are, for the broker, the tools and the
# tests, which call its internals (seg_attach, lease_take...).
$(B)/libtgcore.a: $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

# The installed static library exports what the shared one does, tg_*
# alone: its objects are linked into one, and every other global symbol
# is made local, so no internal name (chain_get, seg_attach) can clash
# with a program's own.  test_exports checks both with nm.
$(B)/libtollgate.a: $(LIB_OBJS) libclient/libtollgate.map
	@rm -f $@
	sed -n 's/^[[:space:]]*\(tg_[a-z_]*\);.*/\1/p' \
	    libclient/libtollgate.map > $(B)/libtollgate.syms
	$(LD) -r -o $(B)/libtollgate.o $(LIB_OBJS)
	$(OBJCOPY) --keep-global-symbols=$(B)/libtollgate.syms \
	    $(B)/libtollgate.o
	$(AR) rcs $@ $(B)/libtollgate.o

$(B)/libtgint.a: $(INT_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

# -z defs: the .so names every library it needs.  Not in sanitizer builds:
# clang links its sanitizer runtimes into executables only.
ZDEFS = $(if $(SAN),,-Wl,-z,defs)
# The real file is the versioned one, so a new VERSION builds it anew.
$(B)/libtollgate.so.$(VERSION): $(LIB_OBJS) libclient/libtollgate.map
	$(CC) -shared -o $@ $(LIB_OBJS) \
	    $(LDFLAGS) $(ZDEFS) -Wl,-soname,libtollgate.so.$(SOVER) \
	    -Wl,--version-script=libclient/libtollgate.map -lpthread

$(B)/libtollgate.so: $(B)/libtollgate.so.$(VERSION)
	ln -sf libtollgate.so.$(VERSION) $(B)/libtollgate.so.$(SOVER)
	ln -sf libtollgate.so.$(SOVER) $@

# The broker but its main, which tests link to drive its duties (reclaim,
# reload, the guard) on a real segment without a process or a sleep.
$(B)/libtgbroker.a: $(filter-out $(B)/broker/main.o,$(BROKER_OBJS))
	@rm -f $@
	$(AR) rcs $@ $^

$(B)/tollgated: $(B)/broker/main.o $(B)/libtgbroker.a $(B)/libtgint.a \
	    $(B)/libtgcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(BROKER_LIBS)

# Each tools/NAME.c is one program, build/NAME; a program in parts keeps
# them in tools/NAME/ (tollstat: tools/stat/).
TOOL_LIBS = $(B)/libtgint.a $(B)/libtgcore.a
$(TOOLS): $(B)/%: $(B)/tools/%.o $(TOOL_LIBS)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(TOOL_LIBS) $(LIBS)
$(B)/tollstat: $(STAT_SRCS:%.c=$(B)/%.o)

# tollbench links its own build of the library, which counts failed CAS
# (libclient/casstat.h); the library everyone else links never does.
CASSTAT_OBJS = $(LIB_SRCS:%.c=$(B)/casstat/%.o)
$(B)/casstat/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -DTG_CASSTAT $(CFLAGS) -c -o $@ $<

$(B)/tollbench: $(BENCH_SRCS:%.c=$(B)/%.o) $(CASSTAT_OBJS) $(B)/libtgint.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lhiredis

# The benchmark table and goodput, a few minutes (not part of `make test',
# which runs a smoke pass and a short goodput, test_goodput).
bench: deps all $(B)/tollbench
	$(B)/tollbench $(BENCH_ARGS)

$(B)/tests/%: $(B)/tests/%.o $(B)/tests/helpers.o $(B)/libtgbroker.a \
	    $(B)/libtgint.a $(B)/libtgcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(BROKER_LIBS) -lcmocka

# Debian packages the build needs; installed only when one is missing.
deps:
	@missing=; for p in $(PKGS) $(EXTRA_PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
	    grep -q 'ok installed' || missing="$$missing $$p"; done; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
	    echo "make deps: missing:$$missing; as root, run:"; \
	    echo "  apt-get update && apt-get install -y$$missing"; exit 1; \
	fi; \
	echo "make deps: installing$$missing"; \
	apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing

run: deps all
	$(B)/tollgated -c broker/tollgate.conf

# `make install' into a stage, and the README's program built against it
# with pkg-config, the way a user builds theirs; test_quickstart runs it.
STAGE = $(B)/stage
$(B)/quickstart: README.md $(B)/libtollgate.so $(NODE_PKG)
	rm -rf $(STAGE)
	$(MAKE) --no-print-directory B=$(B) PREFIX=/usr DESTDIR=$(CURDIR)/$(STAGE) \
	    install >/dev/null
	awk '/^```c$$/{p=1;next} /^```$$/{p=0} p' README.md > $(B)/quickstart.c
	$(CC) $(CFLAGS) -o $@ $(B)/quickstart.c $$(PKG_CONFIG_SYSROOT_DIR=$(CURDIR)/$(STAGE) \
	    PKG_CONFIG_PATH=$(CURDIR)/$(STAGE)/usr/lib/pkgconfig \
	    pkg-config --cflags --libs tollgate) $(LDFLAGS)

# Each fuzz target, built with the plain compiler over replay.c, runs over
# its corpus (tests/fuzz/corpus/NAME for fuzz_NAME.c) and saved crashes
# (tests/fuzz/crashes/NAME).
REPLAYS   = $(FUZZ_SRCS:tests/fuzz/%.c=$(B)/replay/%)
$(B)/replay/%: $(B)/tests/fuzz/%.o $(B)/tests/fuzz/replay.o $(B)/libtgint.a \
	    $(B)/libtgcore.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Every test binary, one after the other, then a summary line.
test: deps all $(TESTS) $(REPLAYS) $(B)/quickstart $(B)/tollbench
	@pass=0; fail=0; for r in $(REPLAYS); do n=$$(basename $$r .c); \
	    n=$${n#fuzz_}; \
	    echo "== $$r"; if $$r tests/fuzz/corpus/$$n/* \
	    $$(ls -d tests/fuzz/crashes/$$n/* 2>/dev/null); then \
	    pass=$$((pass+1)); else fail=$$((fail+1)); \
	    echo "FAILED: $$r"; fi; done; \
	for t in $(TESTS); do echo "== $$t"; \
	    if TG_BUILD=$(B) TG_PYTHON=$(PYTHON) $$t; then pass=$$((pass+1)); \
	    else fail=$$((fail+1)); echo "FAILED: $$t"; fi; done; \
	    echo "summary: $$pass passed, $$fail failed"; \
	    [ $$fail -eq 0 ]

asan:
	$(MAKE) B=build/asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test

# clang: gcc's ThreadSanitizer refuses atomic_thread_fence, which the
# seqlock and the window's Dekker pair need.
tsan:
	@command -v clang >/dev/null || $(MAKE) deps EXTRA_PKGS=clang
	$(MAKE) B=build/tsan CC=clang CFLAGS="-O1 -g" SAN="-fsanitize=thread" \
	    test

# libFuzzer targets need clang; `make fuzz' builds them under build/fuzz.
fuzz:
	@command -v clang >/dev/null || $(MAKE) deps EXTRA_PKGS=clang
	@mkdir -p $(B)/fuzz
	for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
	    clang -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS) \
	    $$f $(INT_SRCS) $(LIB_SRCS) -o $(B)/fuzz/$$n $(LIBS) || exit 1; \
	    done

install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/tollgate
	install -m 0644 include/tollgate.h $(DESTDIR)$(PREFIX)/include/
	install -m 0644 $(B)/libtollgate.a $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(B)/libtollgate.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libtollgate.so.$(VERSION) \
	    $(DESTDIR)$(PREFIX)/lib/libtollgate.so.$(SOVER)
	ln -sf libtollgate.so.$(SOVER) $(DESTDIR)$(PREFIX)/lib/libtollgate.so
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' \
	    'includedir=$${prefix}/include' '' 'Name: tollgate' \
	    'Description: per-host quota broker, client library' \
	    'Version: $(VERSION)' 'Libs: -L$${libdir} -ltollgate' \
	    'Cflags: -I$${includedir}' \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/tollgate.pc
	install -m 0755 $(B)/tollgated $(DESTDIR)$(PREFIX)/sbin/
	install -m 0755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 broker/tollgate.conf \
	    $(DESTDIR)$(PREFIX)/share/tollgate/tollgate.conf.example
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/man/man3 \
	    $(DESTDIR)$(PREFIX)/share/man/man5 \
	    $(DESTDIR)$(PREFIX)/share/man/man7 \
	    $(DESTDIR)$(PREFIX)/share/man/man8 \
	    $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0644 man/tollstat.1 man/tollsim.1 man/tollrun.1 \
	    man/tollctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 man/tollgate.3 $(DESTDIR)$(PREFIX)/share/man/man3/
	for f in $(MANLINKS); do \
	    ln -sf tollgate.3 $(DESTDIR)$(PREFIX)/share/man/man3/$$f.3; done
	install -m 0644 man/tollgate.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0644 man/tollgate.7 $(DESTDIR)$(PREFIX)/share/man/man7/
	install -m 0644 man/tollgated.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	sed 's|/usr/sbin/tollgated|$(PREFIX)/sbin/tollgated|' \
	    broker/tollgated.service \
	    > $(DESTDIR)$(PREFIX)/lib/systemd/system/tollgated.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/tollgated.service
	sed 's|/usr/sbin/tollgated|$(PREFIX)/sbin/tollgated|' \
	    broker/tollgated.run > $(DESTDIR)$(PREFIX)/share/tollgate/tollgated.run
	chmod 0755 $(DESTDIR)$(PREFIX)/share/tollgate/tollgated.run
	install -d $(DESTDIR)$(PYDIR)/tollgate
	install -m 0644 libclient/python/tollgate/*.py $(DESTDIR)$(PYDIR)/tollgate/
	@# The Node.js package and its one dependency, koffi, from the npm
	@# registry (the cache first); without npm, said and skipped.
	if command -v npm >/dev/null; then \
	    install -d $(DESTDIR)$(NODEDIR)/tollgate/lib && \
	    install -m 0644 $(NODE_TOP) \
	    $(DESTDIR)$(NODEDIR)/tollgate/ && \
	    install -m 0644 $(NODE_LIB) \
	    $(DESTDIR)$(NODEDIR)/tollgate/lib/ && \
	    cd $(DESTDIR)$(NODEDIR)/tollgate && npm ci --omit=dev \
	    --ignore-scripts --prefer-offline --no-audit --no-fund \
	    --loglevel=error || exit 1; \
	else echo "make install: no npm, so no Node.js package"; fi
	@# Into the live system: the loader's cache must know the new .so
	@# (/usr/local/lib is not searched without it), for programs and
	@# for the Python package, which asks the loader for libtollgate.so.0.
	if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then \
	    ldconfig; fi

# What install put there, and nothing else; ldconfig again on the live
# system.  Directories that other packages share are left.
INSTALLED = include/tollgate.h lib/libtollgate.a \
	    lib/libtollgate.so.$(VERSION) lib/libtollgate.so.$(SOVER) \
	    lib/libtollgate.so lib/pkgconfig/tollgate.pc sbin/tollgated \
	    $(TOOLS:$(B)/%=bin/%) share/man/man1/tollstat.1 \
	    share/man/man1/tollsim.1 share/man/man1/tollrun.1 \
	    share/man/man1/tollctl.1 \
	    share/man/man3/tollgate.3 $(MANLINKS:%=share/man/man3/%.3) \
	    share/man/man5/tollgate.conf.5 share/man/man7/tollgate.7 \
	    share/man/man8/tollgated.8 \
	    lib/systemd/system/tollgated.service \
	    share/tollgate/tollgate.conf.example share/tollgate/tollgated.run
uninstall:
	rm -f $(INSTALLED:%=$(DESTDIR)$(PREFIX)/%)
	rm -rf $(DESTDIR)$(PYDIR)/tollgate $(DESTDIR)$(NODEDIR)/tollgate
	-rmdir $(DESTDIR)$(PREFIX)/share/tollgate 2>/dev/null
	if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then \
	    ldconfig; fi

clean:
	rm -rf build

-include $(ALL_OBJS:.o=.d)
