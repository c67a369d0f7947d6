"""Streaming outputs: a streaming invocation's events, kept in Redis and read over SSE.

A streaming handler's chunks, the lines it prints, its progress and its status changes are
events of one Redis stream per invocation (:mod:`.db`), numbered by its record in the
step that adds them (``lua/event.lua``, a fragment of the invocation scripts; the worker's
chunks through ``lua/emit.lua``); each is published as it is added, and the API follows
them on its one subscription (:class:`.db.StreamWaiters`). :mod:`.events` is their wire
form: ``text/event-stream``.
"""
