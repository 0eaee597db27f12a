"""The open-file limit: every connection is a descriptor, so server.max_connections needs as many.

Under systemd the soft limit defaults to 1024 whatever the unit's needs; past it accept()
fails with EMFILE and even /health cannot connect. At start the soft limit is raised as far
as the hard limit allows (no privilege needed), and a limit still too low is said once.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

from attrs import frozen

# Descriptors besides connections: the store's connections and lock file, logs, listening
# sockets, the sd_notify socket, the thread pool's wake-up pipes.
HEADROOM = 64


@frozen
class FileLimit:
    soft_before: int
    soft: int  # after raising
    hard: int  # resource.RLIM_INFINITY (-1) when unlimited
    wanted: int  # max_connections + HEADROOM

    @property
    def too_low(self) -> bool:
        return self.soft != resource.RLIM_INFINITY and self.soft < self.wanted

    @property
    def raised(self) -> bool:
        return self.soft != self.soft_before


def raise_file_limit(
    max_connections: int,
    *,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> FileLimit:
    """Raise the soft RLIMIT_NOFILE to min(hard, max_connections + HEADROOM) if it is lower.

    Never lowers it; a refused setrlimit (a sandbox) leaves it as it was.
    """
    wanted = max_connections + HEADROOM
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    new_soft = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
        else:
            new_soft = target
    return FileLimit(soft_before=soft, soft=new_soft, hard=hard, wanted=wanted)
