"""twisted-rta: real-time analytics ingestion and aggregation on Twisted."""

__version__ = "0.1.0"
