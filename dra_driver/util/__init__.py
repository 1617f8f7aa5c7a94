"""Utilities every layer may use.

Durable files (``fsutil``), the cross-process lock (``flock``), fault points for the crash tests
(``faultpoints``), Kubernetes quantities (``quantity``) and logging set-up (``logs``). Imports
nothing of ``dra_driver`` but ``dra_driver.errors``.
"""
