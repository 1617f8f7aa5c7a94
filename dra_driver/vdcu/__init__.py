"""The sharing core: how a share of a card is chosen and described.

The CU allocator (``allocator``), the vdev config files the DCU runtime reads (``vdev``) and the
opaque per-request configuration (``opaque``). May import ``dra_driver.node`` and below; never
gRPC or the Kubernetes client.
"""
