"""The node's DCUs.

Discovery from sysfs and devfs (``devices``), the vendor's ``hy-smi`` (``hysmi``), device health
(``health``) and the mock DCU node that stands in for hardware (``mock``). May import
``dra_driver.util`` and ``dra_driver.errors``; never gRPC or the Kubernetes client.
"""
