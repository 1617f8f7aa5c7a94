"""User tools on top of the driver.

``convert`` (HAMi manifests to DRA), ``verify`` (inside a container), the one-file ``pyz`` and
the local ``demo``. May import every layer below the CLI.
"""
