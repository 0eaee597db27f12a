"""Durability: the node's state directory, recovery at start and the checkpoint each flush.

The journal (``journal/``) and the checkpoint files (``checkpoint/``) are the tools; this
package decides when they are used: which directory a process owns, what a restart loads
and replays, and what one flush writes where, in which order.
"""
