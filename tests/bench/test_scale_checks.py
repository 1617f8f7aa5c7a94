"""The cluster-wide check of a scale run: no card holds more than its slice offers."""

from __future__ import annotations

from typing import Any

from bench.scale_checks import capacity_problems, device_capacities

DRIVER = "dcu.hygon.com"


def a_slice(pool: str, *devices: str, driver: str = DRIVER) -> dict[str, Any]:
    return {
        "spec": {
            "driver": driver,
            "pool": {"name": pool},
            "devices": [
                {
                    "name": name,
                    "capacity": {
                        "cores": {"value": "60"},
                        "memory": {"value": "32752Mi"},
                        "vdevices": {"value": "4"},
                    },
                }
                for name in devices
            ],
        }
    }


def claim(name: str, *results: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "scale", "name": name},
        "status": {"allocation": {"devices": {"results": list(results)}}},
    }


def share(device: str, cores: str, memory: str, *, pool: str = "n1") -> dict[str, Any]:
    return {
        "driver": DRIVER,
        "pool": pool,
        "device": device,
        "consumedCapacity": {"cores": cores, "memory": memory, "vdevices": "1"},
    }


def whole(device: str, *, pool: str = "n1") -> dict[str, Any]:
    return {"driver": DRIVER, "pool": pool, "device": device}


SLICES = [a_slice("n1", "d0", "d1"), a_slice("n9", "x0", driver="other.example.com")]


def test_capacities_are_read_exactly_from_our_driver_only() -> None:
    offered = device_capacities(SLICES, driver=DRIVER)
    assert set(offered) == {("n1", "d0"), ("n1", "d1")}
    assert offered[("n1", "d0")]["memory"] == 32752 * 1024 * 1024


def test_a_full_card_of_shares_and_a_whole_card_are_sound() -> None:
    claims = [
        claim("q1", share("d0", "15", "8188Mi")),
        claim("q2", share("d0", "15", "8188Mi")),
        claim("h1", share("d0", "30", "16376Mi")),
        claim("w1", whole("d1")),
        claim("pending"),  # not allocated yet
        {"metadata": {"name": "bare"}},
    ]
    assert capacity_problems(claims, SLICES, driver=DRIVER) == []


def test_every_overcommitted_capacity_is_named() -> None:
    claims = [
        claim("h1", share("d0", "30", "16376Mi")),
        claim("h2", share("d0", "31", "16377Mi")),
    ]
    assert capacity_problems(claims, SLICES, driver=DRIVER) == [
        "device d0 of pool n1: cores 61 allocated > 60 offered",
        f"device d0 of pool n1: memory {32753 * 1024 * 1024} allocated > "
        f"{32752 * 1024 * 1024} offered",
    ]


def test_a_whole_card_shared_with_anyone_and_an_unknown_device_are_problems() -> None:
    claims = [
        claim("w1", whole("d1")),
        claim("q1", share("d1", "15", "8188Mi")),
        claim("ghost", whole("d7")),
        claim("foreign", {**whole("x0"), "driver": "other.example.com", "pool": "n9"}),
    ]
    assert capacity_problems(claims, SLICES, driver=DRIVER) == [
        "device d1 of pool n1: allocated whole to scale/w1 and also to 1 other allocation(s)",
        "device d7 of pool n1: allocated to 1 claim(s), in no slice",
    ]
