"""The sockets a process holds, read from /proc, for the chaos scripts' leak checks: its
descriptors by kind (TCP connections to given ports, live or closed by the other side; sockets
reset and still open; everything else) and the TCP sockets it holds towards one port.

A descriptor is a socket when ``/proc/PID/fd/N`` links to ``socket:[INODE]``; the inode is
looked up in ``/proc/net/tcp``, ``tcp6`` and ``unix``. A TCP socket reset by its peer leaves
those tables but stays open until its owner closes it: it is in none of them. Standard library
only; Linux only.
"""

import collections
import os

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


def tcp_table():
    """{inode: (remote port, state name)} of every TCP socket (v4 and v6) that has a file."""
    table = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[9] != "0":   # a connection not accepted yet has no file
                        table[int(fields[9])] = (int(fields[2].rsplit(":", 1)[1], 16),
                                                 TCP_STATES.get(int(fields[3], 16), fields[3]))
        except OSError:
            pass
    return table


def unix_inodes():
    try:
        with open("/proc/net/unix") as f:
            next(f)
            return {int(fields[6]) for fields in map(str.split, f) if len(fields) >= 7}
    except OSError:
        return set()


def descriptors(pid):
    """``pid``'s descriptors: ``(count, socket inodes)``; None when ``pid`` is gone."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    count, inodes = 0, []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue   # closed meanwhile
        count += 1
        if target.startswith("socket:["):
            inodes.append(int(target[8:-1]))
    return count, inodes


def fd_kinds(pid, ports):
    """``pid``'s descriptors by kind, a Counter (a kind not seen counts 0): ``total``,
    ``upstream`` (TCP connections to one of ``ports``, ESTABLISHED), ``stale`` (TCP
    connections to one of ``ports`` in any other state, e.g. CLOSE_WAIT once that side closed),
    ``reset`` (sockets in no table: a connection reset and never closed) and ``other``
    (listeners, client connections, unix sockets, files, pipes, eventfds); None when ``pid``
    is gone."""
    found = descriptors(pid)
    if found is None:
        return None
    count, inodes = found
    table, unix = tcp_table(), unix_inodes()
    if any(i not in table and i not in unix for i in inodes):
        # A socket made since the tables were read (under load) is in the next reading.
        table, unix = tcp_table(), unix_inodes()
    kinds = collections.Counter(total=count, other=count - len(inodes))
    for inode in inodes:
        if inode in table and table[inode][0] in ports:
            kinds["upstream" if table[inode][1] == "ESTABLISHED" else "stale"] += 1
        elif inode in table or inode in unix:
            kinds["other"] += 1
        else:
            kinds["reset"] += 1
    return kinds


def sum_kinds(pids, ports):
    """:func:`fd_kinds` of ``pids`` added up."""
    return sum((fd_kinds(pid, ports) or collections.Counter() for pid in pids),
               collections.Counter())


def fmt_kinds(k):
    return (f"{k['total']} ({k['upstream']} live upstream connections, {k['stale']} closed by "
            f"the upstream, {k['reset']} reset, {k['other']} other)")


def socket_inodes(pids):
    """The inodes of every socket ``pids`` hold."""
    return {inode for pid in pids for inode in (descriptors(pid) or (0, []))[1]}


def towards(pids, port):
    """The inodes of the TCP sockets ``pids`` hold towards ``port``, in any state but SYN_SENT
    (a connection being attempted holds nothing yet)."""
    table = tcp_table()
    return {inode for inode in socket_inodes(pids)
            if inode in table and table[inode][0] == port and table[inode][1] != "SYN_SENT"}
