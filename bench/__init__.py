"""Benchmarks for chatsys, side by side with bare reference servers (not tests).

Run from the repository root with the project's venv active:

- ``python -m bench.run`` — connect phase, message phase and knee search on chatsys (Granian and
  Hypercorn) and on three bare in-memory references; prints a table of ratios and one JSON line.
- ``python -m bench.loadgen`` — the WebSocket load generator on its own, against any URL.
- ``python -m bench.refs`` — one reference server (``websockets``, ``granian``, ``hypercorn``).
- ``python -m bench.idle`` — 10,000 idle WebSockets on one gateway: RSS and bytes per socket.

See docs/performance.md for the method and the figures.
"""
