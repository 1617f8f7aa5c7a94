"""Where ``dcu-dra verify`` looks inside a container by default.

Apart from ``verify`` so the CLI can show them in its help without importing the checks
(the daemon builds the same argument parser at every start).
"""

from __future__ import annotations

from pathlib import Path

#: Where the DCU runtime reads a container's vdev configs (hygon-dcu.md §2.2).
DEFAULT_VDEV_DIR = Path("/etc/vdev/docker")
DEFAULT_DEV_DIR = Path("/dev")
DEFAULT_SYS_DIR = Path("/sys")
