/* crashio.h — the simulated power cut (powercut.h) for unit tests, with
 * faults of their own.  Install it with cow_io_set(&cow_powercut_io) after
 * crashio_reset(), which forgets the writes remembered so far and clears
 * the knobs:
 *   crashio_delay_ms   each sync first sleeps this long
 *   crashio_fail_next  the next sync fails with EIO and covers nothing
 *   crashio_crash_at   the N-th sync (from 1) does not happen: the power
 *                      fails there, the process garbles and _exit(0)s (run
 *                      it in a forked child)
 * crashio_garble() is the power cut itself; crashio_unsynced() counts the
 * writes no sync has covered.  One copy per test program (static state). */
#ifndef COW_TEST_CRASHIO_H
#define COW_TEST_CRASHIO_H
#include <errno.h>
#include <unistd.h>

#include "powercut.h"

static int crashio_delay_ms, crashio_fail_next, crashio_crash_at, crashio_syncs;

static int crashio_hook(int fd)
{
	(void)fd;
	int delay = __atomic_load_n(&crashio_delay_ms, __ATOMIC_RELAXED);
	if (delay)
		usleep(delay * 1000);
	if (__atomic_add_fetch(&crashio_syncs, 1, __ATOMIC_RELAXED) == crashio_crash_at)
		_exit(cow_powercut_garble(true) < 0 ? 5 : 0);
	return __atomic_exchange_n(&crashio_fail_next, 0, __ATOMIC_RELAXED) ? -EIO : 0;
}

static inline void crashio_reset(void)
{
	crashio_syncs = crashio_delay_ms = crashio_fail_next = crashio_crash_at = 0;
	cow_powercut_reset();
	cow_powercut_set_hook(crashio_hook);
}

/* Writes not yet covered by a sync. */
static inline int crashio_unsynced(void) { return (int)cow_powercut_unsynced(); }

/* The power fails: every write not covered by a sync turns to garbage.
 * 0, or -1 if a garbage write failed. */
static inline int crashio_garble(void) { return cow_powercut_garble(false) < 0 ? -1 : 0; }
#endif
