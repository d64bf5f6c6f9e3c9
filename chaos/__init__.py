"""A chaos soak harness over real chatsys processes (not part of the installed product).

Run from the repository root with the project's venv active::

    python -m chaos --duration 90 --out runs/chaos

It starts Redis, two A replicas, two B replicas and two gateways on loopback (one gateway
reaches one A replica through a TCP proxy the harness can cut), drives a mixed chat workload,
injects faults one at a time, and checks the contract's "Faults" section: no acknowledged
message lost, duplicated or reordered; every operation works again within seconds of a fault
healing; ``/readyz`` tells the truth; gateway memory and tasks stay bounded.

- ``topology``  the layout over ``chatsys.runtime.topology`` (which starts, kills and
                restarts the processes), the proxy wiring, and unexpected exits
- ``proxy``     the TCP proxy with cut/heal
- ``members``   chat clients that reconnect with ``since`` and record what they saw
- ``workload``  the mixed session (joins, leaves, new rooms, 80 % text, 20 % upload + file)
- ``faults``    the fault schedule and the recovery probe
- ``observers`` ``/readyz`` checked against a real join, and RSS/task samples from ``/metrics``
- ``checker``   the invariants, computed afterwards from raw records
- ``runner``    one run from start to cleanup, and the JSON summary; ``report`` the human report

See docs/reliability.md.
"""
