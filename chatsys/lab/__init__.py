"""The performance lab: run a load scenario end to end and write a report that names the bottleneck.

``chatsys lab run SCENARIO --out DIR`` starts a local topology (or targets a cluster), drives it
with real Locust, records every process's metrics once a second (or reads them back from a
Prometheus server), and writes the raw data plus ``report.md`` with its plots into ``DIR``.
``chatsys lab report DIR [DIR...]`` rebuilds the report, and compares several runs side by side.
"""
