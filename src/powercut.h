/* powercut — a simulated power cut of the store's disk, for the crash tests.
 *
 * With COWFS_TEST_POWERCUT=1 in its environment, cowfsd routes the log's
 * I/O (io.h) through a backend that remembers every write no fdatasync of
 * its file has covered yet.  On SIGUSR2 it overwrites those with garbage,
 * as a power cut may leave them, and exits at once: no reply, no sync, no
 * unmount.  Everything the daemon acknowledged (a write replied to after
 * its sync, a sync replied to) must survive that; tests/pg/crash.sh checks
 * it with Postgres.  It cannot lose more than a real power cut would, so
 * it is harmless where it is set by mistake.  Not meant to run with GC (a
 * dropped segment's descriptor may be reused). */
#ifndef COW_POWERCUT_H
#define COW_POWERCUT_H

/* Before any thread exists: block SIGUSR2 (threads inherit the mask) and
 * install the remembering I/O backend.  Returns 0, or -errno. */
int cow_powercut_arm(void);
/* After daemonizing: start the thread that waits for SIGUSR2. */
int cow_powercut_start(void);
#endif
