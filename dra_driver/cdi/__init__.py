"""What the container runtime is told: CDI.

The spec model and the node and per-claim specs (``spec``), the strict validator with the
official schema vendored in ``schema/`` (``validate``) and the container's variable scheme
(``container_env``). May import ``dra_driver.node`` and below; never gRPC or the Kubernetes
client.
"""
