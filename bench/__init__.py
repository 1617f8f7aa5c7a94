"""``make bench``: the driver's speed and memory, measured against floors taken in the same run.

``python -m bench.run`` (the entry point) starts the local control plane, a mock DCU node and
the real ``dcu-dra kubelet-plugin``, calls the plugin's DRA socket through the fake kubelet's
gRPC client, prints a table and writes ``build/bench.json``. One module per measurement:

- ``node``: the node of every bench (mock DCUs, the daemon, the bench's own kubelet-side
  client and its allocated claims, or a fake kubelet; also used by ``make scale`` and
  ``bench.placement``);
- ``floors``: what is physically possible here (empty gRPC round trip, one GET, one write);
- ``empty_server``: the empty gRPC handler of the round-trip floor (a child process);
- ``startup``: process start to ResourceSlice, idle memory;
- ``latency``: prepare/unprepare latency, with 1 and 64 live shares, 2 DCUs, N in flight;
- ``throughput``: full cycles per second and memory growth over many cycles;
- ``report``: targets, ratios to floors, the table and the JSON.

Beside it: ``compare`` (two trees of ours side by side), ``reference`` (ours beside the
upstream reference driver's plugin, ``make bench-reference``), ``placement`` and ``scale*``
(``make placement``, ``make scale``).

Benchmarks report; they never fail on a slow number (machines are noisy). They fail only when
the driver answers wrongly, which is an error with one line saying what happened.
"""
