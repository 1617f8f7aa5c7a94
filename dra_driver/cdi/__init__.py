"""What the container runtime is told: CDI.

The spec model, names, version rules and rendering (``model``, pure), the node and per-claim
specs built from an inventory (``build``), the strict validator with the official schema
vendored in ``schema/`` (``validate``), the atomic spec writer (``files``) and the container's
variable scheme (``container_env``). Inside the package imports flow one way: ``model`` and
``container_env`` import no other ``cdi`` module, ``validate`` imports only ``model``,
``build`` imports ``model`` and ``container_env``, ``files`` imports ``model`` and
``validate``. May import ``dra_driver.node`` and below; never gRPC or the Kubernetes client.
"""
