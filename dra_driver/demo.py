"""``make demo``: a mock DCU node, its DCUs and the CDI spec generated for it.

Everything runs through the same code the node daemon and the CLI use: the mock library
writes a node tree, discovery reads it, the CDI core renders and validates the spec.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dra_driver import cdi, cdi_validate
from dra_driver.commands import NODE_SPEC_KIND, format_device_table
from dra_driver.devices import discover
from dra_driver.errors import DriverError
from dra_driver.mock import DEFAULT_CONFIG, create_mock_node

#: Where the demo node lives: inside the checkout, ignored by git, reused across runs.
DEFAULT_DEMO_ROOT = Path("build/demo/node")


def run_demo(root: Path) -> None:
    """Create the mock node under ``root`` and print what the driver sees."""
    print(f"==> creating a mock DCU node in {root}")
    create_mock_node(root, DEFAULT_CONFIG)
    inventory = discover(root)
    print(f"==> discovered {len(inventory.devices)} DCUs (dcu-dra devices --root {root})")
    print(format_device_table(inventory.devices))
    spec = cdi.build_node_spec(inventory, kind=NODE_SPEC_KIND)
    cdi_validate.validate_spec(spec)
    rendered = cdi.render_spec(spec).decode()
    print(f"==> CDI spec for the node (dcu-dra cdi generate --root {root} --stdout)")
    print(rendered)
    ids = ", ".join(cdi.qualified_id(spec.kind, d.name) for d in spec.devices)
    print(f"==> the spec is valid CDI {minimum(rendered)}; a pod can ask for: {ids}")


def minimum(rendered: str) -> str:
    """Return the cdiVersion line's value from a rendered spec."""
    return str(json.loads(rendered)["cdiVersion"])


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dra_driver.demo``."""
    parser = argparse.ArgumentParser(prog="dcu-dra-demo", description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_DEMO_ROOT, help="Mock node dir.")
    args = parser.parse_args(argv)
    try:
        run_demo(args.root)
    except DriverError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
