"""The write-ahead journal of accepted events: what lets a 202 survive a kill -9.

``records`` encodes a batch of events as one payload; ``framing`` wraps a payload in a
checksummed, numbered record and names the segment files; ``segments`` reads segment files
(the scan at open that cuts a torn tail, replay, one record's time); ``sync`` runs the
fsyncs off the reactor thread (group commit); ``log`` is the ``Journal`` itself, the one
object the rest of the daemon uses. Imports nothing, so importing the package is free.
"""
