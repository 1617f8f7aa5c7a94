"""The durable prepare engine.

The claim model (``model``), the driver interface the gRPC layer calls (``driver``), the plugin
core that prepares and unprepares claims (``plugin``) and its checkpoint (``checkpoint``). May
import ``dra_driver.cdi``, ``dra_driver.vdcu``, ``dra_driver.node`` and below; never gRPC or the
Kubernetes client.
"""
