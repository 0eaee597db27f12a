"""The node's state directory: where its journal and checkpoints live, held by one process.

A process claims the directory of its node id with an flock before it reads or writes
anything there, so two processes never replay or append to the same journal. The default id
takes the first free slot (``host:port``, ``host:port/2``, ...; the same slots as the store
lease), which keeps a restarted process on its own journal; an explicit id that is held is
refused. The claim is local and synchronous: recovery needs no store.
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen

from twisted_rta.store.lease import (
    FileLease,
    acquire_node_id,
    lock_file_path,
    node_id_candidates,
)

NODES = "nodes"


@frozen
class NodeState:
    """A claimed state directory; ``release`` gives it up (closing the process does too)."""

    node_id: str
    directory: Path
    _lease: FileLease

    @property
    def journal_directory(self) -> Path:
        return self.directory / "journal"

    @property
    def checkpoint_directory(self) -> Path:
        return self.directory / "checkpoints"

    def release(self) -> None:
        self._lease.release()


def claim_node_state(data_directory: Path, node_id: str, *, slots: int) -> NodeState:
    """Claim the state directory of ``node_id`` (or of its first free slot, ``slots`` > 1).

    Raises NodeIdHeldError when every candidate is held by a live process.
    """
    nodes = data_directory / NODES
    nodes.mkdir(parents=True, exist_ok=True)
    base = str(nodes / "node")
    lease = FileLease(base)
    claimed = acquire_node_id(lease, node_id_candidates(node_id, slots))
    lock = Path(lock_file_path(base, claimed))
    directory = lock.with_suffix("")  # node.<safe id>.<hash>/ beside its lock file
    directory.mkdir(exist_ok=True)
    return NodeState(claimed, directory, lease)
