"""Checkpoints: the aggregator's state and its unstored windows, encoded (``codec``) and kept
on disk atomically (``files``); also the encoding of the live windows a node publishes."""
