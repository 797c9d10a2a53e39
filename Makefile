# cowfs — plain Makefile, pkg-config for every dependency.
#   make                 build into build/
#   make check           unit tests + integration tests (needs root, /dev/fuse, postgresql-15)
#   make bench           benchmarks against the plain disk (not a test)
#   make install         PREFIX=/usr/local DESTDIR=
#   make SANITIZE=1      build with AddressSanitizer + UBSan
#   make WERROR=1        warnings fail the build (CI sets this)

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= /sbin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=

CC      ?= cc
PKG_CONFIG ?= pkg-config
PKGS    := fuse3 jansson libcrypto
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes \
           -Wmissing-prototypes -Wno-unused-parameter -Wformat=2 -D_FILE_OFFSET_BITS=64 \
           -D_GNU_SOURCE -pthread -MMD -MP $(shell $(PKG_CONFIG) --cflags $(PKGS))
LDLIBS  += $(shell $(PKG_CONFIG) --libs $(PKGS)) -pthread
ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

B := build
CORE := crc32c hash io util log store tree inode branch ref walk gc fsck fs control
CORE_OBJS := $(CORE:%=$(B)/%.o)

all: $(B)/cowfs $(B)/cowfsd $(B)/mount.cowfs

$(B):
	mkdir -p $(B)

$(B)/%.o: src/%.c | $(B)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/libcowfs.a: $(CORE_OBJS)
	$(AR) rcs $@ $^

$(B)/cowfsd: $(B)/cowfsd.o $(B)/fuse_ops.o $(B)/libcowfs.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/cowfs: $(B)/cowfs.o $(B)/libcowfs.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/mount.cowfs: $(B)/cowfsd
	ln -sf cowfsd $@

# --- tests -------------------------------------------------------------
UNIT := $(patsubst tests/unit/%.c,$(B)/%,$(wildcard tests/unit/test_*.c))
CHECK_LIBS := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

$(B)/test_%: tests/unit/test_%.c $(B)/libcowfs.a
	$(CC) $(CFLAGS) -Isrc $(shell $(PKG_CONFIG) --cflags check) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) $(CHECK_LIBS) $(LDLIBS)

$(B)/fsops: tests/fsops.c | $(B)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(filter %.c,$^)

unit: $(UNIT)
	@set -e; for t in $(UNIT); do echo "== $$t"; $$t; done

check: all unit $(B)/fsops
	bash tests/run-integration.sh

bench: all
	bash bench/run.sh
	bash bench/branch.sh
	bash bench/gc.sh

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(B)/cowfs $(B)/cowfsd $(DESTDIR)$(BINDIR)/
	ln -sf $(BINDIR)/cowfsd $(DESTDIR)$(SBINDIR)/mount.cowfs
	for m in man/*.1; do [ ! -e "$$m" ] || install -m 0644 $$m $(DESTDIR)$(MANDIR)/man1/; done
	for m in man/*.5; do [ ! -e "$$m" ] || install -m 0644 $$m $(DESTDIR)$(MANDIR)/man5/; done
	for m in man/*.8; do [ ! -e "$$m" ] || install -m 0644 $$m $(DESTDIR)$(MANDIR)/man8/; done

clean:
	rm -rf $(B)

.PHONY: all unit check bench install clean
-include $(wildcard $(B)/*.d)
