"""Events: the ``Event`` value type and the JSON -> Event decoder, one job per module.

- ``model``: the value types the rest of the daemon uses (Event, errors, BatchResult).
- ``ids``: ids for events sent without one.
- ``rules``: the limits and field rules every event is judged by.
- ``framing``: the careful, stdlib-based JSON framing (exact spans and error wording).
- ``fast``: the msgspec fast path for well-formed batches.
- ``decode``: the public ``decode_event`` and ``decode_batch``.

Nothing is imported here, so that ``twisted_rta.events.model`` loads neither msgspec nor the
JSON scanner (the aggregation imports only the model).
"""
