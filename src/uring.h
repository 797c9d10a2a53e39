/* uring — FUSE requests over io_uring instead of read(2)/write(2) on
 * /dev/fuse (Linux 6.14 and later, with the fuse module's enable_uring).
 *
 * libfuse 3.14, Debian 12's, knows nothing of it, so this module sits
 * under libfuse as its custom I/O (fuse_session_custom_io): libfuse still
 * mounts, negotiates INIT, runs its worker loop on /dev/fuse and decodes
 * every request into the fuse_lowlevel_ops; what changes is how requests
 * reach the daemon and how replies go back.
 *
 *   - INIT: when the kernel offers FUSE_OVER_IO_URING, the reply libfuse
 *     writes is amended to accept it, and the ring's threads start.
 *   - Each possible CPU has a queue in the kernel; a request goes to the
 *     queue of the CPU its sender runs on.  Each queue gets THREADS threads,
 *     each with its own io_uring and one entry (a header and a payload
 *     buffer of the connection's largest request) registered with the
 *     kernel.  The threads are not pinned to their queue's CPU: pinned, on
 *     two busy cores, TPC-B lost 9 % (docs/PERFORMANCE.md).
 *   - An entry holds its request until the reply, and the kernel queues
 *     the requests of one CPU in order: THREADS bounds how many of a
 *     queue's requests the daemon holds at once, durable WRITEs waiting for
 *     a log sync included, where the /dev/fuse loop reads on (up to
 *     max_background of them).  When the kernel writes back hundreds of
 *     MiB at once, a commit's WAL page queued behind that burst waits for
 *     it to pass through THREADS entries at a time: with 8 a second of TPC-B
 *     fell to 0 transactions, with 32 to 223 (527 through /dev/fuse).
 *     Payload buffers are touched only as large requests use them.
 *   - A request from a ring entry is laid out as /dev/fuse would have
 *     delivered it, in front of the payload (no copy of the data), and given
 *     to fuse_session_process_buf().
 *   - Replies: libfuse's writev goes here.  A reply whose unique ID is that
 *     of a request held by a ring entry is copied into the entry and
 *     committed (COMMIT_AND_FETCH, which also arms the entry for the next
 *     request) by the entry's own thread, which waits for it when another
 *     thread replies (a durable WRITE's reply comes from the thread whose
 *     log sync covered it): io_uring cancels what a thread submitted when
 *     that thread exits, and libfuse's workers come and go.  Anything else
 *     (INIT, requests that came before the ring was ready, notifications)
 *     goes to /dev/fuse.  FORGET and INTERRUPT always come through
 *     /dev/fuse.
 *
 * Measured on a 2-core VM (docs/PERFORMANCE.md, "What bounds the Postgres figures"): it
 * works (tests/uring.sh runs the POSIX, Postgres and crash suites over it)
 * but is not faster there, so it is off unless asked for (-o uring).
 *
 *   cow_uring_attach(SE, THREADS)  after fuse_session_mount(), before the
 *                                  loop: 0 or -errno (libfuse refused).
 *   cow_uring_stop()               after the loop and the unmount: stops and
 *                                  joins the ring's threads.
 * One session per process.
 */
#ifndef COW_URING_H
#define COW_URING_H

struct fuse_session;

int cow_uring_attach(struct fuse_session *se, unsigned threads);
void cow_uring_stop(void);
#endif
