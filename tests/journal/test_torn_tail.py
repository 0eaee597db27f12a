"""Open cuts a torn or corrupt tail exactly, keeps everything before it, and says so once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import formatEvent

from tests.journal.helpers import batch, event, open_journal, segment_files
from twisted_rta.events.model import Event
from twisted_rta.journal.framing import HEADER_SIZE, frame, segment_name
from twisted_rta.journal.log import Journal, TornTail
from twisted_rta.journal.records import encode_events


def build(directory: Path, records: int = 40, segment_bytes: int = 2048) -> dict[int, Any]:
    journal = open_journal(directory, segment_bytes=segment_bytes)
    written = {}
    for number in range(1, records + 1):
        events = batch(number * 10, number % 4 + 1)
        written[journal.append(events)] = events
    journal.close()
    return written


def reopen(directory: Path) -> Journal:
    return open_journal(directory, segment_bytes=2048)


def last_segment(directory: Path) -> Path:
    return directory / segment_files(directory)[-1]


def record_offsets(path: Path) -> list[int]:
    """Where each record of a segment starts."""
    data = path.read_bytes()
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER_SIZE + int.from_bytes(data[offset + 4 : offset + 8], "little")
    return offsets


def torn_logs(logs: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(entry) for entry in logs if "torn tail" in entry.get("log_format", "")]


def expect_kept(journal: Journal, written: dict[int, tuple[Event, ...]], last: int) -> None:
    assert journal.last_seq == last
    assert dict(journal.replay(0)) == {seq: written[seq] for seq in range(1, last + 1)}
    files = sorted(journal.directory.glob("*.journal"))
    assert journal.size_bytes == sum(path.stat().st_size for path in files)


def test_every_truncation_of_the_last_record_is_cut_exactly(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    pristine = tmp_path / "pristine"
    written = build(pristine)
    segment = last_segment(pristine)
    whole = segment.read_bytes()
    start = record_offsets(segment)[-1]
    last = max(written)
    work = tmp_path / "work"
    for length in range(start + 1, len(whole)):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        (work / segment.name).write_bytes(whole[:length])
        captured_logs.clear()

        journal = reopen(work)
        reason = "partial header" if length - start < HEADER_SIZE else "partial payload"
        assert journal.torn_tail == TornTail(segment.name, start, length - start, reason)
        assert (work / segment.name).stat().st_size == start
        expect_kept(journal, written, last - 1)
        assert torn_logs(captured_logs) == [
            f"journal: cut {length - start} bytes of a torn tail at {segment.name}:{start} "
            f"({reason}); kept {last - 1} records"
        ]
        assert journal.append(written[last]) == last  # the seq is written again
        journal.close()
        again = reopen(work)
        assert again.torn_tail is None
        again.close()


def test_a_cut_exactly_between_records_is_no_torn_tail(tmp_path: Path) -> None:
    written = build(tmp_path)
    segment = last_segment(tmp_path)
    start = record_offsets(segment)[-1]
    segment.write_bytes(segment.read_bytes()[:start])
    journal = reopen(tmp_path)
    assert journal.torn_tail is None
    expect_kept(journal, written, max(written) - 1)
    journal.close()


@pytest.mark.parametrize("where", ["header", "payload"])
def test_a_bad_checksum_in_the_last_record_is_cut(tmp_path: Path, where: str) -> None:
    written = build(tmp_path)
    segment = last_segment(tmp_path)
    start = record_offsets(segment)[-1]
    data = bytearray(segment.read_bytes())
    flip = start + 10 if where == "header" else len(data) - 3  # a seq byte, or the payload
    data[flip] ^= 0x40
    segment.write_bytes(bytes(data))
    journal = reopen(tmp_path)
    assert journal.torn_tail == TornTail(segment.name, start, len(data) - start, "bad checksum")
    expect_kept(journal, written, max(written) - 1)
    journal.close()


@pytest.mark.parametrize(
    "garbage",
    [b"\x00" * 4096, b"x", b"garbage after the last record\n" * 3, b"RJ\x01\n" + b"\xff" * 40],
)
def test_trailing_garbage_is_cut(tmp_path: Path, garbage: bytes) -> None:
    written = build(tmp_path)
    segment = last_segment(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(garbage)
    journal = reopen(tmp_path)
    assert journal.torn_tail is not None
    assert (journal.torn_tail.segment, journal.torn_tail.offset) == (segment.name, size)
    assert journal.torn_tail.bytes_cut == len(garbage)
    assert journal.torn_tail.reason in {"not a record header", "partial header", "partial payload"}
    expect_kept(journal, written, max(written))
    journal.close()


def test_a_good_record_out_of_sequence_is_cut(tmp_path: Path) -> None:
    written = build(tmp_path)
    segment = last_segment(tmp_path)
    size = segment.stat().st_size
    last = max(written)
    stray = frame(encode_events([event(1)]), last + 5, 0)
    with segment.open("ab") as file:
        file.write(stray)
    journal = reopen(tmp_path)
    assert journal.torn_tail == TornTail(
        segment.name, size, len(stray), f"seq {last + 5} where {last + 1} was expected"
    )
    expect_kept(journal, written, last)
    journal.close()


def test_corruption_in_an_earlier_segment_cuts_everything_after_it(
    tmp_path: Path, captured_logs: list[dict[str, Any]]
) -> None:
    written = build(tmp_path, records=80)
    names = segment_files(tmp_path)
    assert len(names) >= 4
    second = tmp_path / names[1]
    offsets = record_offsets(second)
    bad = offsets[2]
    data = bytearray(second.read_bytes())
    data[bad + HEADER_SIZE + 1] ^= 0x01
    second.write_bytes(bytes(data))
    later = sum((tmp_path / name).stat().st_size for name in names[2:])

    journal = reopen(tmp_path)
    cut = len(data) - bad + later
    assert journal.torn_tail == TornTail(names[1], bad, cut, "bad checksum")
    assert segment_files(tmp_path) == names[:2]
    first_of_second = int(names[1].split(".")[0])
    expect_kept(journal, written, first_of_second + 1)
    assert len(torn_logs(captured_logs)) == 1
    assert journal.append([event(1)]) == first_of_second + 2
    journal.close()


def test_a_gap_between_segments_is_cut(tmp_path: Path) -> None:
    written = build(tmp_path, records=60)
    names = segment_files(tmp_path)
    assert len(names) >= 3
    (tmp_path / names[1]).unlink()
    journal = reopen(tmp_path)
    first_of_second = int(names[1].split(".")[0])
    assert journal.torn_tail is not None
    assert journal.torn_tail.segment == names[2] and journal.torn_tail.offset == 0
    assert journal.torn_tail.reason == (
        f"segment starts at seq {int(names[2].split('.')[0])} where {first_of_second} was expected"
    )
    assert segment_files(tmp_path) == names[:1]
    expect_kept(journal, written, first_of_second - 1)
    journal.close()


def test_garbage_from_the_first_byte_leaves_an_empty_journal_that_keeps_its_name(
    tmp_path: Path,
) -> None:
    (tmp_path / segment_name(42)).write_bytes(b"\x00" * 100)
    journal = reopen(tmp_path)
    assert journal.torn_tail == TornTail(segment_name(42), 0, 100, "not a record header")
    assert (journal.last_seq, journal.size_bytes) == (41, 0)
    assert journal.append([event(1)]) == 42
    journal.close()
