"""``make demo``: the driver end to end on a local control plane, no container engine needed.

Two nodes, each a mock DCU node (2x Z100, 1x K100_AI) with a fake kubelet and the real
``dcu-dra kubelet-plugin``; every pod of ``deploy/examples/`` is scheduled by the real
scheduler, its claims allocated from the plugins' ResourceSlices and prepared by the plugins.
The demo then prints what each pod got, runs ``dcu-dra verify`` (the one-file
``dcu-dra.pyz``) in each pod's container as laid out from its CDI devices, and tears everything
down.

- ``main``: flags, step order, Ctrl-C and exit codes (``python -m dra_driver.tools.demo``);
- ``session``: the steps against the control plane, and the teardown;
- ``console``: progress lines, one-line failures, the build dir;
- ``nodes``: one demo node (mock node, fake kubelet, plugin process);
- ``table``: the result table (pure);
- ``containers``: each example pod's container from its CDI devices, and verify run in it.
"""
