"""What append returned survives a kill -9 of the process that appended it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.journal.helpers import batch, open_journal

APPENDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from twisted.internet.task import Clock
    from tests.journal.helpers import batch, run_now
    from twisted_rta.journal.log import Journal

    journal = Journal.open(Path(sys.argv[1]), clock=Clock(), run_in_thread=run_now,
                           segment_bytes=16384)
    number = 0
    while True:
        number += 1
        seq = journal.append(batch(number, number % 3 + 1))
        print(seq, number, flush=True)  # only after append returned: "the 202"
    """
)


def test_every_returned_append_survives_a_kill_9(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    appender = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(tmp_path)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    acknowledged: dict[int, int] = {}
    try:
        assert appender.stdout is not None
        for line in appender.stdout:
            seq, number = map(int, line.split())
            acknowledged[seq] = number
            if len(acknowledged) >= 3000:
                appender.send_signal(signal.SIGKILL)
                break
    finally:
        appender.kill()
        appender.wait(timeout=10)
    assert len(acknowledged) >= 3000

    journal = open_journal(tmp_path, segment_bytes=16384)
    replayed = dict(journal.replay(0))
    assert journal.last_seq >= max(acknowledged)
    assert list(replayed) == list(range(1, journal.last_seq + 1))
    for seq, number in acknowledged.items():
        assert replayed[seq] == batch(number, number % 3 + 1)
    journal.close()
