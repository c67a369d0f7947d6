"""Checkpoints: what a long attempt saves so the next attempt of the same invocation
resumes instead of starting again.

A handler writes into ``context.current().checkpoint_dir`` and calls ``ctx.checkpoint()``;
the worker (``worker/checkpoints.py``) packs the directory into one file of the file store
and :mod:`.db` points the invocation's record at it (``lua/save.lua``: only while that
attempt runs, the previous checkpoint's file let go in the same step). The file is held by
the invocation while it is unfinished and expires with its record; a ``DELETE`` of the
record lets it go at once.
"""
