"""The journal on real files: appends, segments, replay, reopen, release, bounds, errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from tests.journal.helpers import T0, batch, event, open_fds_under, open_journal, segment_files
from twisted_rta.events.model import Event
from twisted_rta.journal.framing import HEADER_SIZE, segment_name
from twisted_rta.journal.log import Journal, JournalFull, JournalWriteError
from twisted_rta.journal.records import encode_events
from twisted_rta.journal.segments import INDEX_EVERY


def fill(journal: Journal, records: int, start: int = 1) -> dict[int, tuple[Event, ...]]:
    """Append ``records`` records of 1 to 5 events; their events by seq."""
    written = {}
    for number in range(start, start + records):
        events = batch(number * 10, number % 5 + 1)
        written[journal.append(events)] = events
    return written


def close(journal: Journal) -> None:
    done = journal.close()
    assert done.called  # the synchronous thread stand-in
    done.result = None  # consume (a failure would have raised above)


def test_a_new_journal_is_empty_and_starts_at_one(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "journal"
    journal = open_journal(directory)
    assert (journal.last_seq, journal.size_bytes, journal.released_seq) == (0, 0, 0)
    assert journal.torn_tail is None
    assert segment_files(directory) == [segment_name(1)] == ["00000000000000000001.journal"]
    assert list(journal.replay(0)) == []
    assert journal.oldest_unreleased_at() is None
    assert journal.append([event(1)]) == 1
    close(journal)


def test_many_appends_round_trip_across_segments_and_a_reopen(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=4096)
    written = fill(journal, 400)
    assert journal.last_seq == 400
    assert journal.segment_count > 5
    assert dict(journal.replay(0)) == written
    files = sorted(tmp_path.glob("*.journal"))
    assert journal.size_bytes == sum(path.stat().st_size for path in files)
    # Every segment but the active one stays under segment_bytes (no single record is bigger).
    assert all(path.stat().st_size <= 4096 for path in files)
    size = journal.size_bytes
    close(journal)

    again = open_journal(tmp_path, segment_bytes=4096)
    assert (again.last_seq, again.size_bytes, again.torn_tail) == (400, size, None)
    assert dict(again.replay(0)) == written
    assert again.append(batch(1, 2)) == 401
    assert list(again.replay(400)) == [(401, batch(1, 2))]
    close(again)


def test_segment_files_are_named_after_their_first_record(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=2048)
    fill(journal, 100)
    firsts = [int(name.split(".")[0]) for name in segment_files(tmp_path)]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    for first in firsts:
        replayed = next(journal.replay(first - 1))
        assert replayed[0] == first
    close(journal)


def test_replay_after_any_seq_is_exact(tmp_path: Path) -> None:
    # Segments of many records, so that replay also starts from the sparse offset index.
    journal = open_journal(tmp_path, segment_bytes=128 * 1024)
    written = fill(journal, 3 * INDEX_EVERY + 17)
    assert journal.segment_count >= 2
    last = journal.last_seq
    for after in [
        -5,
        0,
        1,
        2,
        *range(INDEX_EVERY - 2, INDEX_EVERY + 3),
        600,
        last - 1,
        last,
        last + 9,
    ]:
        replayed = list(journal.replay(after))
        assert [seq for seq, _ in replayed] == list(range(max(after, 0) + 1, last + 1))
        assert all(events == written[seq] for seq, events in replayed)
    close(journal)


def test_replay_reads_what_was_written_when_it_was_called(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 3)
    replay = journal.replay(1)
    journal.append([event(99)])
    assert [seq for seq, _ in replay] == [2, 3]
    close(journal)


def test_release_deletes_whole_segments_and_numbering_continues(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=2048)
    written = fill(journal, 120)
    firsts = [int(name.split(".")[0]) for name in segment_files(tmp_path)]
    second, third = firsts[1], firsts[2]
    size = journal.size_bytes

    # Through the middle of the second segment: only the first file goes.
    freed = journal.release_through(second + 1)
    assert freed == size - journal.size_bytes > 0
    assert journal.released_seq == second + 1
    assert [int(name.split(".")[0]) for name in segment_files(tmp_path)] == firsts[1:]
    assert journal.release_through(second) == 0  # already released: nothing more
    assert journal.released_seq == second + 1
    assert dict(journal.replay(third - 1)) == {s: e for s, e in written.items() if s >= third}

    # Through the last record: the active segment is rolled, every file goes.
    freed = journal.release_through(120)
    assert journal.size_bytes == 0
    assert segment_files(tmp_path) == [segment_name(121)]
    assert list(journal.replay(0)) == []
    assert journal.append([event(1)]) == 121
    close(journal)

    again = open_journal(tmp_path, segment_bytes=2048)
    assert (again.last_seq, again.released_seq) == (121, 120)
    assert again.release_through(121) > 0
    close(again)
    third_time = open_journal(tmp_path)
    assert (third_time.last_seq, third_time.released_seq, third_time.size_bytes) == (121, 121, 0)
    assert third_time.append([event(2)]) == 122
    close(third_time)


def test_releasing_past_the_last_record_moves_the_numbering_on(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    fill(journal, 3)
    journal.release_through(1000)
    assert (journal.last_seq, journal.size_bytes) == (1000, 0)
    assert segment_files(tmp_path) == [segment_name(1001)]
    assert journal.append([event(1)]) == 1001
    close(journal)
    assert open_journal(tmp_path).last_seq == 1001


def test_journal_full_at_the_bound_and_room_again_after_release(tmp_path: Path) -> None:
    same = batch(100, 3)  # records of equal size
    record = HEADER_SIZE + len(encode_events(same))
    journal = open_journal(tmp_path, max_bytes=record * 10, segment_bytes=record * 3)
    for _ in range(10):
        assert journal.room_for(3)
        journal.append(same)
    assert journal.size_bytes == journal.max_bytes
    assert not journal.room_for(1)
    with pytest.raises(JournalFull, match="past its"):
        journal.append(same)
    assert journal.last_seq == 10 and journal.size_bytes == record * 10

    assert journal.release_through(6) == record * 6  # two whole segments of three
    assert journal.room_for(3)
    assert journal.append(same) == 11
    close(journal)


def test_a_bigger_record_than_room_left_is_refused_before_the_bound(tmp_path: Path) -> None:
    small = HEADER_SIZE + len(encode_events([event(1)]))
    journal = open_journal(tmp_path, max_bytes=small * 4)
    journal.append([event(1)])
    assert journal.room_for(100)
    with pytest.raises(JournalFull):
        journal.append(batch(1, 100))
    assert journal.append([event(1)]) == 2
    close(journal)


def test_a_failed_write_is_truncated_back_and_the_journal_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = open_journal(tmp_path)
    written = fill(journal, 5)
    size = journal.size_bytes
    real_write = os.write
    calls = []

    def half_then_full_disk(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(JournalWriteError, match="No space left on device"):
        journal.append(batch(1, 20))
    monkeypatch.undo()
    assert len(calls) == 2
    assert (journal.last_seq, journal.size_bytes) == (5, size)
    assert sum(path.stat().st_size for path in tmp_path.glob("*.journal")) == size
    assert journal.append([event(7)]) == 6
    written[6] = (event(7),)
    assert dict(journal.replay(0)) == written
    close(journal)
    again = open_journal(tmp_path)
    assert again.torn_tail is None and dict(again.replay(0)) == written
    close(again)


def test_an_append_after_close_is_refused(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    journal.append([event(1)])
    close(journal)
    with pytest.raises(JournalWriteError, match="closed"):
        journal.append([event(2)])
    assert open_fds_under(tmp_path) == []


def test_durable_under_interval_has_fired_and_unknown_seqs_are_refused(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, policy="interval")
    seq = journal.append([event(1)])
    assert journal.durable(seq).called
    with pytest.raises(ValueError, match="not written"):
        journal.durable(seq + 1)
    close(journal)


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="policy"):
        open_journal(tmp_path, policy="sometimes")
    with pytest.raises(ValueError, match="positive"):
        open_journal(tmp_path, max_bytes=0)


def test_other_files_in_the_directory_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "1.journal").write_text("not a segment name")
    (tmp_path / f"{segment_name(1)}.tmp").write_text("garbage")
    journal = open_journal(tmp_path)
    assert journal.torn_tail is None and journal.last_seq == 0
    journal.append([event(1)])
    close(journal)
    assert (tmp_path / "notes.txt").read_text() == "hello"


def test_oldest_unreleased_at_across_release_and_reopen(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(T0)
    journal = open_journal(tmp_path, clock, segment_bytes=32 * 1024)
    appended = {}
    for number in range(1, 2 * INDEX_EVERY + 40):
        clock.advance(0.25)
        appended[journal.append([event(number)])] = clock.seconds()
    assert journal.segment_count >= 2
    assert journal.oldest_unreleased_at() == appended[1]
    for through in (1, INDEX_EVERY - 1, INDEX_EVERY, INDEX_EVERY + 77, 2 * INDEX_EVERY + 3):
        journal.release_through(through)
        assert journal.oldest_unreleased_at() == appended[through + 1]
    close(journal)

    again = open_journal(tmp_path, clock)
    oldest_kept = int(segment_files(tmp_path)[0].split(".")[0])
    assert again.released_seq == oldest_kept - 1
    assert again.oldest_unreleased_at() == appended[oldest_kept]
    again.release_through(again.last_seq)
    assert again.oldest_unreleased_at() is None
    clock.advance(3)
    again.append([event(1)])
    assert again.oldest_unreleased_at() == clock.seconds()
    close(again)


def test_the_append_time_is_the_clock_to_the_millisecond(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1.005)  # 1004.9999... ms in binary: rounded, not cut
    journal = open_journal(tmp_path, clock)
    journal.append([event(1)])
    assert journal.oldest_unreleased_at() == 1.005
    close(journal)


def test_release_after_close_deletes_files_but_creates_none(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=1024)
    fill(journal, 30)
    close(journal)
    names = segment_files(tmp_path)
    assert journal.release_through(journal.last_seq) > 0
    assert segment_files(tmp_path) == names[-1:]  # the active one stays: no new segment
    with pytest.raises(JournalWriteError, match="closed"):
        journal.release_through(journal.last_seq + 10)
    assert open_fds_under(tmp_path) == []
