"""The fake kubelet's own checkpoint of prepared claims (the real one is ``dra_manager_state``).

Optional: only written when a state file is configured. Written atomically (temp file in the
same directory, fsync, rename). A missing file is an empty checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dra_driver.testing.fakekubelet.model import FakeKubeletError, PreparedClaim, PreparedDevice

CHECKPOINT_VERSION = 1


def _encode(claim: PreparedClaim) -> dict[str, Any]:
    return {
        "namespace": claim.namespace,
        "name": claim.name,
        "uid": claim.uid,
        "drivers": list(claim.drivers),
        "podUIDs": sorted(claim.pod_uids),
        "devices": [
            {
                "driver": device.driver,
                "pool": device.pool,
                "device": device.device,
                "requestNames": list(device.request_names),
                "cdiDeviceIDs": list(device.cdi_device_ids),
                "shareID": device.share_id,
            }
            for device in claim.devices
        ],
    }


def _decode(entry: dict[str, Any]) -> PreparedClaim:
    return PreparedClaim(
        namespace=str(entry["namespace"]),
        name=str(entry["name"]),
        uid=str(entry["uid"]),
        drivers=tuple(entry["drivers"]),
        pod_uids=frozenset(entry["podUIDs"]),
        devices=tuple(
            PreparedDevice(
                driver=str(device["driver"]),
                pool=str(device["pool"]),
                device=str(device["device"]),
                request_names=tuple(device["requestNames"]),
                cdi_device_ids=tuple(device["cdiDeviceIDs"]),
                share_id=device["shareID"],
            )
            for device in entry["devices"]
        ),
    )


def save_checkpoint(path: Path, claims: Iterable[PreparedClaim]) -> None:
    """Replace the checkpoint at ``path`` atomically."""
    document = {"version": CHECKPOINT_VERSION, "claims": [_encode(claim) for claim in claims]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> list[PreparedClaim]:
    """Read the checkpoint; an absent file is empty, a corrupt one raises."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise FakeKubeletError(f"checkpoint {path}: cannot read: {exc}") from exc
    if not isinstance(document, dict) or document.get("version") != CHECKPOINT_VERSION:
        raise FakeKubeletError(f"checkpoint {path}: unknown format (want version 1)")
    try:
        return [_decode(entry) for entry in document["claims"]]
    except (KeyError, TypeError) as exc:
        raise FakeKubeletError(f"checkpoint {path}: corrupt entry: {exc}") from exc
