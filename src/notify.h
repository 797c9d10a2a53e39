/* notify — tell a service manager how the daemon is doing: systemd's
 * sd_notify protocol, written out by hand so that cowfs needs no libsystemd.
 *
 * A manager that wants to hear (systemd, for a unit with Type=notify) puts
 * the address of an AF_UNIX datagram socket in $NOTIFY_SOCKET: an absolute
 * path, or "@name" for a socket in the abstract namespace.  Each message is
 * one datagram of newline-separated VARIABLE=VALUE lines, for example
 * "READY=1" (the service is up), "STOPPING=1" (it is shutting down) or
 * "STATUS=free text" (shown by systemctl status).  The kernel attaches the
 * sender's pid, which systemd checks against NotifyAccess= (main: only the
 * main process may speak), so send from the process the manager started.
 *
 * Calling sequence:
 *   cow_notify_init()       once, early, while the process has one thread:
 *                           takes the address from $NOTIFY_SOCKET and
 *                           removes the variable, so that no child (a
 *                           Postgres, a hook) speaks to the manager as us.
 *   cow_notify(STATE)       send STATE as one datagram; any thread.
 *   cow_notifyf(FMT, ...)   the same, printf-style (at most 4 KiB).
 *
 * Returns:
 *   cow_notify_init: 1 if an address was taken, 0 if $NOTIFY_SOCKET is
 *     unset or empty (nobody listens: every send is then a no-op),
 *     -EINVAL if it is neither an absolute path nor "@name" or is too long
 *     for a socket address, -EAFNOSUPPORT for an address family other than
 *     AF_UNIX (systemd 253's "vsock:"); after an error sends are no-ops too.
 *   cow_notify, cow_notifyf: 1 sent, 0 nobody to tell, -errno if the
 *     datagram could not be sent (-ENOENT or -ECONNREFUSED: nobody listens
 *     at the address any more).  Like sd_notify(3), the send waits only
 *     while the manager's receive queue is full.
 */
#ifndef COW_NOTIFY_H
#define COW_NOTIFY_H

int cow_notify_init(void);
int cow_notify(const char *state);
int cow_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
