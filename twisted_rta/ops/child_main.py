"""A supervised child's entry point: its own process group, SIGTERM when the supervisor
dies, then ``twistd`` with the arguments it was given.

Its own process group: a terminal's Ctrl-C or a ``kill`` of the supervisor's group reaches
only the supervisor, which forwards one SIGTERM (a second would only log an error in the
child). The parent-death signal: a supervisor killed with SIGKILL leaves no orphan serving
on its port; each child stops as if it had been sent SIGTERM.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

SUPERVISOR_PID = "RTA_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def follow_supervisor(environ: dict[str, str] | os._Environ[str]) -> None:
    """Ask for SIGTERM when the supervisor ends; if it ended already, stop now."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The supervisor may have died between fork and prctl: then this process was adopted.
    expected = environ.pop(SUPERVISOR_PID, None)
    if expected is not None and str(os.getppid()) != expected:
        raise SystemExit("rta: the supervisor ended before this process started")


def main() -> None:
    os.setpgid(0, 0)
    follow_supervisor(os.environ)
    from twisted.scripts.twistd import run

    sys.argv[0] = "twistd"
    run()


if __name__ == "__main__":
    main()
