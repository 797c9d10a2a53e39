#!/usr/bin/env python3
"""bench/commitpath.py — where a Postgres commit's fdatasync spends its time.

Reads `perf script` output (stdin) of a trace taken with these events, all CPUs:
  syscalls:sys_enter_fdatasync syscalls:sys_exit_fdatasync
  fuse:fuse_request_send fuse:fuse_request_end
  sched:sched_wakeup sched:sched_switch block:block_bio_queue
and prints one line per figure, "KEY MEAN MEDIAN COUNT" (microseconds),
for bench/commitpath.sh to lay out.

For each fdatasync(2) a postgres process makes:
  pg_fdatasync        its length, enter to exit
On a cowfs mount, of those that sent a FUSE WRITE (the write-back of the
WAL page, answered once the daemon's log is synced):
  to_send             fdatasync entered -> the WRITE sent
  write_rt            the WRITE sent -> its reply (the last one, if several)
  setattr             SETATTR round trips in it (the file's times), per fdatasync
  reply_to_wake       the reply -> the postgres process woken
  wake_to_run         woken -> running again
  run_to_exit         running -> fdatasync returns
And of each WRITE (matched to the daemon thread the sender woke):
  d_wake              WRITE sent -> a daemon thread woken
  d_run               woken -> running
  d_work              running -> the daemon's fdatasync of the log begins;
  d_work_idle         the same, of those that found no fdatasync of the log
                      under way when their thread began to run (the work
                      alone), and
  d_work_busy         of those that found one (the work, and waiting for it)
  d_sync              the first fdatasync of the log that began after that
                      thread ran (the one that covers it, unless the WRITE
                      was not yet appended when it began)
  d_reply             that fdatasync returned -> the reply
Every fdatasync the daemon made:
  daemon_fdatasync    its length
The fdatasyncs that reach the disk (Postgres's on the plain disk, the
daemon's of its log on cowfs), split by whether the file system wrote
metadata in them (a bio marked M that the syncing thread queued itself, e.g.
ext4 without a journal writing the inode after a block allocation: one more
write the flush waits for; a journal's writes come from its own thread and
are not seen here):
  disk_sync_meta      its length, of those that wrote metadata
  disk_sync_data      its length, of those that wrote none
"""
import re
import sys

RX = re.compile(r'^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$')


def mean(v):
    return sum(v) / len(v) if v else float('nan')


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float('nan')


def main():
    events = []
    for line in sys.stdin:
        m = RX.match(line)
        if m:
            comm, pid, _cpu, t, name, rest = m.groups()
            events.append((float(t), comm.strip(), int(pid), name, rest))
    events.sort(key=lambda e: e[0])

    out = {k: [] for k in ('pg_fdatasync', 'to_send', 'write_rt', 'setattr', 'reply_to_wake', 'wake_to_run',
                           'run_to_exit', 'd_wake', 'd_run', 'd_work', 'd_work_idle', 'd_work_busy', 'd_sync', 'd_reply',
                           'daemon_fdatasync', 'disk_sync_meta', 'disk_sync_data')}
    req_op = {}        # req -> (opcode name, sender pid, send time)
    pg_open = {}       # postgres pid -> its fdatasync in progress
    done = []          # finished postgres fdatasyncs
    writes = {}        # req -> what we learn of a WRITE on the daemon's side
    waiting = []       # WRITEs sent, not yet replied to (daemon side)
    d_open = {}        # daemon tid -> fdatasync enter time
    d_syncs = []       # (enter, exit) of the daemon's fdatasyncs
    meta = set()       # (pid, enter time) of fdatasyncs that wrote metadata
    disk = {'postgres': [], 'cowfsd': []}  # (length, wrote metadata) per process kind

    for t, comm, pid, name, rest in events:
        if name == 'syscalls:sys_enter_fdatasync':
            if comm == 'postgres':
                pg_open[pid] = {'t0': t, 'reqs': {}, 'end': None, 'wake': None, 'run': None}
            elif comm == 'cowfsd':
                d_open[pid] = t
                for r in waiting:
                    w = writes[r]
                    if 'run' in w and 'sync0' not in w:
                        w['sync0'] = t
        elif name == 'syscalls:sys_exit_fdatasync':
            if comm == 'postgres' and pid in pg_open:
                f = pg_open.pop(pid)
                f['t1'] = t
                done.append(f)
                disk['postgres'].append((t - f['t0'], (pid, f['t0']) in meta))
            elif comm == 'cowfsd' and pid in d_open:
                t0 = d_open.pop(pid)
                d_syncs.append((t0, t))
                disk['cowfsd'].append((t - t0, (pid, t0) in meta))
                for r in waiting:
                    w = writes[r]
                    # the first sync that began after the WRITE was taken up covers it
                    if 'sync0' in w and 'sync1' not in w and t0 >= w['run']:
                        w['sync0'], w['sync1'] = t0, t
        elif name == 'fuse:fuse_request_send':
            m = re.search(r'req (\d+) opcode \d+ \((\w+)\)', rest)
            if not m:
                continue
            r, op = m.group(1), m.group(2)
            req_op[r] = (op, pid, t)
            if pid in pg_open:
                pg_open[pid]['reqs'][r] = [op, t, None]
            if op == 'FUSE_WRITE':
                writes[r] = {'send': t, 'sender': pid}
                waiting.append(r)
        elif name == 'fuse:fuse_request_end':
            m = re.search(r'req (\d+)', rest)
            if not m or m.group(1) not in req_op:
                continue
            r = m.group(1)
            op, sender, _ = req_op.pop(r)
            f = pg_open.get(sender)
            if f and r in f['reqs']:
                f['reqs'][r][2] = t
                f['end'], f['wake'], f['run'] = t, None, None
            if r in writes:
                w = writes.pop(r)
                waiting.remove(r)
                if all(k in w for k in ('dwake', 'run', 'sync1')):
                    out['d_wake'].append(w['dwake'] - w['send'])
                    out['d_run'].append(w['run'] - w['dwake'])
                    out['d_work'].append(w['sync0'] - w['run'])
                    out['d_work_busy' if w['busy'] else 'd_work_idle'].append(w['sync0'] - w['run'])
                    out['d_sync'].append(w['sync1'] - w['sync0'])
                    out['d_reply'].append(t - w['sync1'])
        elif name == 'block:block_bio_queue':
            # "254,0 WSM 350486888 + 8 [cowfsd]": M marks a metadata write
            f = rest.split()
            if len(f) > 1 and 'M' in f[1]:
                if comm == 'postgres' and pid in pg_open:
                    meta.add((pid, pg_open[pid]['t0']))
                elif comm == 'cowfsd' and pid in d_open:
                    meta.add((pid, d_open[pid]))
        elif name == 'sched:sched_wakeup':
            m = re.search(r'comm=(\S+) pid=(\d+)', rest)
            if not m:
                continue
            wcomm, wpid = m.group(1), int(m.group(2))
            f = pg_open.get(wpid)
            if f and f['end'] is not None and f['wake'] is None:
                f['wake'] = t
            if wcomm == 'cowfsd' and comm == 'postgres':
                # the newest WRITE this postgres process sent, not yet taken up
                for r in reversed(waiting):
                    w = writes[r]
                    if w['sender'] == pid and 'dwake' not in w:
                        w['dwake'], w['dtid'] = t, wpid
                        break
        elif name == 'sched:sched_switch':
            m = re.search(r'next_pid=(\d+)', rest)
            if not m:
                continue
            npid = int(m.group(1))
            f = pg_open.get(npid)
            if f and f['wake'] is not None and f['run'] is None:
                f['run'] = t
            for r in waiting:
                w = writes[r]
                if w.get('dtid') == npid and 'run' not in w:
                    w['run'] = t
                    w['busy'] = bool(d_open)  # another sync of the log under way

    for f in done:
        out['pg_fdatasync'].append(f['t1'] - f['t0'])
        ws = [v for v in f['reqs'].values() if v[0] == 'FUSE_WRITE' and v[2] is not None]
        if not ws:
            continue
        first = min(v[1] for v in ws)
        last = max(v[2] for v in ws)
        out['to_send'].append(first - f['t0'])
        out['write_rt'].append(last - first)
        out['setattr'].append(sum(v[2] - v[1] for v in f['reqs'].values()
                                  if v[0] == 'FUSE_SETATTR' and v[2] is not None))
        if f['wake'] is not None and f['run'] is not None:
            out['reply_to_wake'].append(f['wake'] - f['end'])
            out['wake_to_run'].append(f['run'] - f['wake'])
            out['run_to_exit'].append(f['t1'] - f['run'])
    out['daemon_fdatasync'] = [b - a for a, b in d_syncs]
    # the process whose fdatasyncs reach the disk: the daemon, if it made any
    syncs = disk['cowfsd'] or disk['postgres']
    out['disk_sync_meta'] = [d for d, m in syncs if m]
    out['disk_sync_data'] = [d for d, m in syncs if not m]

    for k, v in out.items():
        print('%s %.1f %.1f %d' % (k, mean(v) * 1e6, median(v) * 1e6, len(v)))


if __name__ == '__main__':
    main()
