"""Opening a node's durable state at start: its directory, journal and checkpoints, and the
aggregator recovered from them, ready before the daemon serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_rta.aggregation.aggregator import Aggregator
from twisted_rta.checkpoint.files import CheckpointFiles
from twisted_rta.config import JournalConfig
from twisted_rta.durability.checkpointer import Checkpointer
from twisted_rta.durability.node_state import NodeState
from twisted_rta.durability.progress import AppliedProgress
from twisted_rta.durability.recovery import Recovered, recover
from twisted_rta.ingest.dedup import RecentIds
from twisted_rta.journal.log import Journal

log = Logger()

RunInThread = Callable[[Callable[[], Any]], Deferred[Any]]


@frozen
class Durability:
    """A node's open journal and checkpoints, and what the start recovered from them."""

    node: NodeState
    journal: Journal
    files: CheckpointFiles
    progress: AppliedProgress
    checkpointer: Checkpointer
    recovered: Recovered

    def start(self) -> None:
        self.journal.start()

    async def close(self) -> None:
        """The final fsync; then the node's directory is free for the next process."""
        try:
            await self.journal.close()
        finally:
            self.node.release()


def open_durability(
    config: JournalConfig,
    node: NodeState,
    aggregator: Aggregator,
    *,
    clock: IReactorTime,
    run_in_thread: RunInThread,
    recent_ids: RecentIds | None = None,
) -> Durability:
    """Open the journal (cutting a torn tail), load the newest checkpoint into the fresh
    ``aggregator`` and replay the journal after it."""
    journal = Journal.open(
        node.journal_directory,
        clock=clock,
        run_in_thread=run_in_thread,
        policy=config.fsync,
        fsync_interval=config.fsync_interval,
        max_bytes=config.max_bytes,
        segment_bytes=config.segment_bytes,
    )
    files = CheckpointFiles(node.checkpoint_directory, run_in_thread=run_in_thread, clock=clock)
    progress = AppliedProgress()
    checkpoint = files.load_latest()
    recovered = recover(
        aggregator, progress, checkpoint, journal.replay, clock.seconds(), recent_ids
    )
    log.info(
        "recovered node {node_id}: {source}; replayed {records} journal records "
        "({events} events); {pending} closed windows wait for the store",
        node_id=node.node_id,
        source=f"checkpoint {recovered.mark}" if checkpoint is not None else "no checkpoint",
        records=recovered.records_replayed,
        events=recovered.events_replayed,
        pending=len(recovered.pending),
    )
    held = max((progress.covers_seq, *progress.beyond))
    if held > journal.last_seq:
        # The checkpoint holds records the journal lost (a torn tail the checkpoint had
        # already taken in): number new records after them, or replay would skip them.
        journal.release_through(held)
    checkpointer = Checkpointer(
        aggregator,
        progress,
        files,
        journal,
        node.node_id,
        clock,
        recent_ids=recent_ids,
        mark=recovered.mark,
    )
    return Durability(node, journal, files, progress, checkpointer, recovered)
