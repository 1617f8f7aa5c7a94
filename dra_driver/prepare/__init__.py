"""The durable prepare engine.

The claim model (``model``), the driver interface the gRPC layer calls (``driver``), planning a
claim's CUs, pipe ids and vdev numbers (``plan``), the files a prepared claim has
(``claim_files``), the plugin core that prepares and unprepares claims durably (``plugin``) and
its checkpoint (``checkpoint``). May import ``dra_driver.cdi``, ``dra_driver.vdcu``,
``dra_driver.node`` and below; never gRPC or the Kubernetes client.
"""
