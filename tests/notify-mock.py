#!/usr/bin/env python3
"""tests/notify-mock.py — stand in for systemd starting a Type=notify service.

    notify-mock.py [--abstract] [--store STORE --mount MNT] LOG -- DAEMON [ARGS...]

Binds an AF_UNIX datagram socket (a path in a new directory next to LOG, or
with --abstract a name in the abstract namespace), with SO_PASSCRED on as systemd has it, and
runs DAEMON with NOTIFY_SOCKET naming it.  Appends to LOG, one line each:

    started PID
    notify PID MESSAGE      (each datagram; the pid the kernel says sent it,
                             newlines in MESSAGE written as |)
    ready-check ok | ready-check FAIL: WHY
    exit RC                 (the daemon's exit status, or -SIGNAL)

With --store and --mount, the moment READY=1 arrives the daemon is frozen
(SIGSTOP), and while it cannot make progress the mock checks what must
already be true when readiness is announced: MNT is a fuse.cowfs mount of
STORE, and STORE/control.sock accepts a connection.  Then it thaws the
daemon (SIGCONT).  The mock exits when the daemon does, with its status.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile


def mounted(store, mnt):
    with open("/proc/self/mountinfo") as f:
        found = None
        for line in f:
            left, right = line.split(" - ", 1)
            point = left.split()[4].replace("\\040", " ")
            fstype, source = right.split()[:2]
            if point == mnt:
                found = (fstype, source.replace("\\040", " "))
    return found


def ready_check(pid, store, mnt):
    os.kill(pid, signal.SIGSTOP)
    try:
        m = mounted(store, mnt)
        if m != ("fuse.cowfs", store):
            return "FAIL: at READY=1 %s is not a cowfs mount of %s (mount table: %r)" % (mnt, store, m)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(os.path.join(store, "control.sock"))
        except OSError as e:
            return "FAIL: at READY=1 the control socket does not accept connections: %s" % e
        finally:
            s.close()
        return "ok"
    finally:
        os.kill(pid, signal.SIGCONT)


def main(argv):
    abstract = False
    store = mnt = None
    args = argv[1:]
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--abstract":
            abstract = True
        elif opt == "--store":
            store = os.path.realpath(args.pop(0))
        elif opt == "--mount":
            mnt = os.path.realpath(args.pop(0))
        else:
            sys.exit("notify-mock: unknown option " + opt)
    if len(args) < 3 or args[1] != "--":
        sys.exit(__doc__)
    log_path, cmd = args[0], args[2:]
    log = open(log_path, "a", buffering=1)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    tmp = None
    if abstract:
        name = "cowfs-notify-mock-%d" % os.getpid()
        sock.bind("\0" + name)
        addr = "@" + name
    else:
        # next to LOG, so that the test's temp dir takes it along if we are killed
        tmp = tempfile.mkdtemp(prefix="notify.", dir=os.path.dirname(os.path.abspath(log_path)))
        addr = os.path.join(tmp, "notify")
        sock.bind(addr)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(0.2)

    env = dict(os.environ, NOTIFY_SOCKET=addr)
    proc = subprocess.Popen(cmd, env=env)
    log.write("started %d\n" % proc.pid)
    rc = None
    ucred = struct.calcsize("3i")
    try:
        while True:
            try:
                msg, anc, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(ucred))
            except socket.timeout:
                if rc is not None:
                    break  # the daemon is gone and nothing more is queued
                rc = proc.poll()
                continue
            pid = -1
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", data[:ucred])[0]
            text = msg.decode(errors="replace")
            log.write("notify %d %s\n" % (pid, text.replace("\n", "|")))
            if store and mnt and "READY=1" in text.split("\n"):
                log.write("ready-check %s\n" % ready_check(proc.pid, store, mnt))
    finally:
        if tmp:
            os.unlink(addr)
            os.rmdir(tmp)
    log.write("exit %d\n" % rc)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
