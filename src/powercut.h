/* powercut — a simulated power cut of the store's disk, for the crash tests.
 *
 * cow_powercut_io is an I/O backend (io.h) that remembers every write no
 * fdatasync of its file has covered yet (a sync covers the writes that
 * landed before it began); cow_powercut_garble() overwrites those with
 * garbage, as a power cut may leave them.
 *
 * With COWFS_TEST_POWERCUT=1 in its environment, cowfsd routes the log's
 * I/O through it; on SIGUSR2 it garbles and exits at once: no reply, no
 * sync, no unmount.  Everything the daemon acknowledged (a write replied to
 * after its sync, a sync replied to) must survive that; tests/pg/crash.sh
 * checks it with Postgres.  It cannot lose more than a real power cut
 * would, so it is harmless where it is set by mistake.  Not meant to run
 * with GC (a dropped segment's descriptor may be reused).  The unit tests
 * install it directly (tests/unit/crashio.h) and add their faults with a
 * sync hook. */
#ifndef COW_POWERCUT_H
#define COW_POWERCUT_H
#include <stdbool.h>
#include <stddef.h>

#include "io.h"

extern const struct cow_io cow_powercut_io;

/* Called at the start of every fdatasync through cow_powercut_io: a
 * negative errno fails the sync, which then covers nothing.  NULL: none. */
typedef int (*cow_powercut_hook)(int fd);
void cow_powercut_set_hook(cow_powercut_hook hook);
/* Forget the writes remembered so far (a fresh disk, as far as it knows). */
void cow_powercut_reset(void);
/* Writes not covered by a sync yet. */
size_t cow_powercut_unsynced(void);
/* The power fails: every write not covered by a sync turns to garbage, and
 * is forgotten.  KEEP_LOCKED: from here on no write lands and no sync
 * returns, for a caller about to exit.  The count garbled, or -EIO if a
 * garbage write failed. */
int cow_powercut_garble(bool keep_locked);

/* cowfsd: before any thread exists, block SIGUSR2 (threads inherit the
 * mask) and install cow_powercut_io.  Returns 0, or -errno. */
int cow_powercut_arm(void);
/* cowfsd, after daemonizing: start the thread that waits for SIGUSR2. */
int cow_powercut_start(void);
#endif
