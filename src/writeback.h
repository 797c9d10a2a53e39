/* writeback — how the kernel writes back the mount's dirty pages.
 *
 * With the writeback cache, a write(2) to a branch file lands in the page
 * cache and the kernel sends it to the daemon later.  For every FUSE mount
 * the kernel caps those dirty pages hard: the mount's backing device info
 * (/sys/class/bdi/MAJOR:MINOR) gets max_ratio 1 and strict_limit 1, so once
 * about 1 % of the dirty limit is dirty (47 MB on a 24 GiB machine), each
 * writer sleeps in balance_dirty_pages until the daemon catches up.  That
 * is a guard against an untrusted or stuck server pinning memory.  Postgres
 * evicting hint-bit-dirty buffers after a TPC-B run crossed it constantly:
 * select-only fell to 0.4–0.7 of the plain disk.
 *
 * cowfsd is a trusted server (root mounted it), so it asks for the plain
 * disk's treatment: strict_limit 0, max_ratio 100.  What the cap guards
 * against is a server that never cleans its pages, holding the global dirty
 * limit and throttling every other writer; it is not needed to keep the
 * daemon itself moving, since the kernel lets a writer through once its own
 * device has next to nothing dirty (the case of the daemon's appends to the
 * store while the mount holds the dirty pages).  Where it may (it takes
 * CAP_SYS_RESOURCE), the daemon also marks itself an I/O flusher
 * (PR_SET_IO_FLUSHER), which makes that explicit: its writes to the store
 * are throttled only on the store's device.
 *
 *   cow_writeback_flusher()   once, before any thread starts: the process
 *                             and every thread it starts become flushers.
 *   cow_writeback_child()     in a child after fork(), before exec: a
 *                             flusher's children (Postgres) would inherit
 *                             the exemption; async-signal-safe.
 *   cow_writeback_lift(MNT)   once MNT is mounted (before it is served is
 *                             fine: it reads /proc/self/mountinfo, never
 *                             the mount).
 * Both return 0 or -errno: -EPERM without CAP_SYS_RESOURCE (flusher) or
 * root (lift), -ENOENT if MNT is not a FUSE mount.  On error nothing is
 * changed and the mount works with the kernel's limits.
 */
#ifndef COW_WRITEBACK_H
#define COW_WRITEBACK_H

int cow_writeback_flusher(void);
void cow_writeback_child(void);
int cow_writeback_lift(const char *mnt);
#endif
