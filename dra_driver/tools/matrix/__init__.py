"""``make matrix``: the smoke suite on every Kubernetes version we claim, one table.

For each version (1.34, 1.35, 1.36, 1.37, each built by ``make controlplane kubelet
K8S=<minor>``) it starts that version's control plane with the gates the version needs, one real
node with that version's kubelet and the real plugin, runs the checks and stops everything; it
prints one table, version x check, with times, and writes ``build/matrix.json``. The README's
compatibility table is rendered from that file (``python -m dra_driver.tools.matrix readme``).

- ``model``: the versions, the checks, the results, the JSON and the table (pure);
- ``readme``: the README's compatibility section from a run (pure);
- ``checks``: the smoke suite against one version's control plane and real node;
- ``main``: flags, one version after the other, the files.
"""
