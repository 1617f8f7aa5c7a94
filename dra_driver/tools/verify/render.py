"""A ``Report`` as text (``format_report``) and as the JSON document of ``verify --json``.

Pure: formats what the checks found and decides nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from dra_driver.tools.verify.report import Report, Status, VdevFile, cu_ranges


def report_document(report: Report) -> dict[str, object]:
    """The JSON form printed by ``dcu-dra verify --json``."""
    return {
        "ok": report.ok,
        "mode": "whole-card" if report.whole_card else "vdcu",
        "vdevDir": str(report.vdev_dir),
        "devDir": str(report.dev_dir),
        "sysDir": None if report.sys_dir is None else str(report.sys_dir),
        "vdevFiles": [_vdev_document(f) for f in report.vdev_files],
        "ignored": list(report.ignored),
        "cards": [
            {
                "pciBusID": card.pci_bus_id,
                "computeUnits": card.compute_units,
                "drmNodes": None if card.drm_nodes is None else list(card.drm_nodes),
                "vendorID": None if card.vendor_id is None else f"0x{card.vendor_id:04x}",
            }
            for card in report.cards
        ],
        "deviceNodes": [
            {"path": str(n.path), "type": n.type.value, "pciBusID": n.pci_bus_id}
            for n in report.device_nodes
        ],
        "checks": [
            {"check": c.kind.value, "status": c.status.value, "message": c.message}
            for c in report.checks
        ],
    }


def _vdev_document(vdev: VdevFile) -> dict[str, object]:
    config = vdev.config
    if config is None:
        return {"file": vdev.name, "parsed": False, "pciBusID": vdev.pci_bus_id}
    return {
        "file": vdev.name,
        "parsed": True,
        "pciBusID": config.pci_bus_id,
        "computeUnits": config.cu_count,
        "cus": cu_ranges(config.mask.cus()),
        "cuMask": list(config.mask.hex_words()),
        "memoryMiB": config.memory_mib,
        "deviceID": config.device_id,
        "vdevID": config.vdev_id,
        "pipeID": config.pipe_id,
    }


def format_report(report: Report) -> str:
    """The human form: what the container got, then one ``OK``/``SKIP``/``FAIL`` line per check."""
    lines: list[str] = []
    card_cus = {card.pci_bus_id: card.compute_units for card in report.cards}
    if report.whole_card:
        lines.append(f"whole-card container: no vdev files in {report.vdev_dir}")
    else:
        lines.append(f"vDCU container: {len(report.vdev_files)} vdev file(s) in {report.vdev_dir}")
        header = (
            "FILE",
            "PCI BUS ID",
            "CUS",
            "CU MASK (WORD 0,1)",
            "MEMORY",
            "DEVICE ID",
            "VDEV ID",
            "PIPE ID",
        )
        rows = [_vdev_row(f, card_cus) for f in report.vdev_files]
        lines.extend(_table(header, rows))
    if report.ignored:
        lines.append(f"ignored (not vdev files): {', '.join(report.ignored)}")
    if report.whole_card and report.cards:
        card_rows = [
            (
                card.pci_bus_id,
                "?" if card.compute_units is None else str(card.compute_units),
                ", ".join(card.drm_nodes or ()) or "?",
            )
            for card in report.cards
        ]
        lines.extend(_table(("PCI BUS ID", "CUS", "DRM NODES"), card_rows))
    lines.append("")
    node_rows = [(str(n.path), n.type.value, n.pci_bus_id or "-") for n in report.device_nodes]
    lines.extend(_table(("DEVICE NODE", "TYPE", "PCI BUS ID"), node_rows))
    lines.append("")
    lines.extend(f"{c.status.value.upper()}: {c.message}" for c in report.checks)
    if report.problems:
        lines.append(f"verify: {len(report.problems)} problem(s)")
    else:
        passed = sum(c.status is Status.OK for c in report.checks)
        lines.append(f"verify: all {passed} checks passed")
    return "\n".join(lines) + "\n"


def _vdev_row(vdev: VdevFile, card_cus: dict[str, int | None]) -> tuple[str, ...]:
    config = vdev.config
    if config is None:
        bus = vdev.pci_bus_id or "?"
        return (vdev.name, bus, "?", "(rejected by the parser)", "?", "?", "?", "?")
    total = card_cus.get(config.pci_bus_id)
    cus = str(config.cu_count) if total is None else f"{config.cu_count}/{total}"
    return (
        vdev.name,
        config.pci_bus_id,
        cus,
        ",".join(config.mask.hex_words()),
        f"{config.memory_mib} MiB",
        str(config.device_id),
        str(config.vdev_id),
        str(config.pipe_id),
    )


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
