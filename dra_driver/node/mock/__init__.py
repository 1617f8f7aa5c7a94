"""A mock Hygon DCU node: the sysfs/devfs tree and ``hy-smi`` a real node would have.

The mock replaces hardware, never code: discovery, CDI generation and the kubelet plugin run
unchanged on the tree it writes.
"""

from dra_driver.node.mock.layout import (
    DEFAULT_CONFIG,
    MockConfig,
    MockDevice,
    create_mock_node,
    load_config,
    parse_config,
)

__all__ = [
    "DEFAULT_CONFIG",
    "MockConfig",
    "MockDevice",
    "create_mock_node",
    "load_config",
    "parse_config",
]
