"""Whether another worker's process still exists, for workers that can see each other's pids."""

from __future__ import annotations

import os
import socket
from functools import cache

# Platforms with no PID namespaces (macOS, BSD): every process on the host shares one pid space.
_SHARED_PIDS = "host"


@cache  # a process never changes PID namespace
def pid_namespace() -> str:
    """This process's PID namespace ('' when pids cannot be checked here, as on Windows).

    Two workers can judge each other's pids only when they share the host name *and* this value:
    containers started with the host's network share its host name but not its pids.
    """
    if os.name != "posix":
        return ""  # os.kill(pid, 0) would not be a harmless probe there
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return _SHARED_PIDS


def visible_here(host: str, pid_ns: str) -> bool:
    """Whether a process recorded with this host name and PID namespace shares this process's pids."""
    return bool(pid_ns) and pid_ns == pid_namespace() and host == socket.gethostname()


def process_alive(pid: int) -> bool:
    """False only when ``pid`` certainly names no running process (gone, or a zombie awaiting its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, as another user's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # "pid (comm) state …": comm may hold spaces and parentheses, the state follows the last ')'.
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
