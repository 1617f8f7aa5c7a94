"""vdev config files: byte-exact rendering, strict parsing of the three runtime rules, dir I/O."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dra_driver.vdcu.allocator import PIPE_IDS_PER_CARD, CuMask
from dra_driver.vdcu.vdev import (
    VDEV_ID_LIMIT,
    VdevConfig,
    VdevError,
    check_pipe_ids_unique,
    parse_vdev,
    read_vdev_dir,
    render_vdev,
    vdev_file_name,
    write_vdev_dir,
)

#: The reference's example: the first share on a card, 30 CUs, 16 GiB.
REFERENCE_EXAMPLE = """\
PciBusId: 0000:3b:00.0
cu_mask: 0x000000003fffffff
cu_mask: 0x0000000000000000
cu_count: 30
mem: 16384 MiB
device_id: 0
vdev_id: 0
pipe_id: 0
enable: 1
"""


def config(
    *,
    pci_bus_id: str = "0000:3b:00.0",
    mask: CuMask | None = None,
    memory_mib: int = 16384,
    ordinal: int = 0,
    pipe_id: int = 0,
) -> VdevConfig:
    return VdevConfig(
        pci_bus_id=pci_bus_id,
        mask=CuMask.from_cus(range(30)) if mask is None else mask,
        memory_mib=memory_mib,
        device_id=ordinal,
        vdev_id=ordinal,
        pipe_id=pipe_id,
    )


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# --- render ---------------------------------------------------------------------------------


def test_render_matches_the_reference_example_byte_for_byte() -> None:
    assert render_vdev(config()) == REFERENCE_EXAMPLE


def test_render_of_a_second_share_and_a_share_spanning_both_words() -> None:
    second = render_vdev(config(mask=CuMask.from_cus(range(30, 50)), pipe_id=1))
    assert "cu_mask: 0x0003ffffc0000000\ncu_mask: 0x0000000000000000\ncu_count: 20\n" in second
    assert "pipe_id: 1\n" in second
    spanning = render_vdev(config(mask=CuMask.from_cus(range(60, 72))))
    assert "cu_mask: 0xf000000000000000\ncu_mask: 0x00000000000000ff\ncu_count: 12\n" in spanning


def test_cu_count_is_derived_from_the_mask() -> None:
    assert config(mask=CuMask.from_cus([1, 5, 64])).cu_count == 3


def test_disabled_config_renders_enable_0_and_is_refused_on_parse() -> None:
    disabled = VdevConfig(
        pci_bus_id="0000:3b:00.0",
        mask=CuMask.from_cus([0]),
        memory_mib=1,
        device_id=0,
        vdev_id=0,
        pipe_id=0,
        enabled=False,
    )
    text = render_vdev(disabled)
    assert text.endswith("enable: 0\n")
    with pytest.raises(VdevError, match=r"^vdev0\.conf: enable 0 is not 1; "):
        parse_vdev(text, file_name="vdev0.conf")


@pytest.mark.parametrize(
    ("vdev_id", "name"), [(0, "vdev0.conf"), (7, "vdev7.conf"), (199, "vdev199.conf")]
)
def test_vdev_file_name_carries_the_vdev_id(vdev_id: int, name: str) -> None:
    assert vdev_file_name(vdev_id) == name


def test_vdev_file_name_rejects_negative_ids() -> None:
    with pytest.raises(ValueError, match=r"^vdev_id -1 is negative$"):
        vdev_file_name(-1)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        (
            {"pci_bus_id": "0000:3B:00.0"},
            "PciBusId '0000:3B:00.0' is not a lowercase DDDD:BB:DD.F address",
        ),
        ({"mask": CuMask()}, "cu_mask holds no CU"),
        ({"memory_mib": 0}, "mem 0 MiB is below 1 MiB"),
        ({"ordinal": VDEV_ID_LIMIT}, "vdev_id 200 is outside 0-199"),
        ({"pipe_id": PIPE_IDS_PER_CARD}, "pipe_id 20 is outside 0-19"),
        ({"pipe_id": -1}, "pipe_id -1 is outside 0-19"),
    ],
    ids=["uppercase-pci", "empty-mask", "no-memory", "vdev-id-200", "pipe-id-20", "pipe-id-neg"],
)
def test_config_refuses_values_the_runtime_cannot_use(
    kwargs: dict[str, object], problem: str
) -> None:
    with pytest.raises(VdevError, match=r"^vdev config for ") as caught:
        config(**kwargs)  # type: ignore[arg-type]
    assert caught.value.problems == [problem]


# --- parse ----------------------------------------------------------------------------------


def test_parse_reads_the_reference_example() -> None:
    assert parse_vdev(REFERENCE_EXAMPLE, file_name="vdev0.conf") == config()


@given(
    cus=st.sets(st.integers(0, 127), min_size=1),
    memory_mib=st.integers(1, 1 << 20),
    ordinal=st.integers(0, VDEV_ID_LIMIT - 1),
    pipe_id=st.integers(0, PIPE_IDS_PER_CARD - 1),
    bus=st.integers(0, 255),
)
def test_render_then_parse_round_trips(
    cus: set[int], memory_mib: int, ordinal: int, pipe_id: int, bus: int
) -> None:
    original = config(
        pci_bus_id=f"0000:{bus:02x}:00.0",
        mask=CuMask.from_cus(cus),
        memory_mib=memory_mib,
        ordinal=ordinal,
        pipe_id=pipe_id,
    )
    text = render_vdev(original)
    assert text.count("\n") == 9
    assert parse_vdev(text, file_name=vdev_file_name(ordinal)) == original


@pytest.mark.parametrize(
    ("text", "file_name", "problem"),
    [
        (
            edit(REFERENCE_EXAMPLE, "cu_count: 30", "cu_count: 31"),
            "vdev0.conf",
            "cu_count 31 is not the popcount 30 of the cu_mask words "
            "(rule 1: the runtime rejects the record)",
        ),
        (
            edit(REFERENCE_EXAMPLE, "vdev_id: 0", "vdev_id: 3"),
            "vdev0.conf",
            "vdev_id 3 does not match the file name vdev0.conf "
            "(rule 2: the container would get no accelerator)",
        ),
        (
            REFERENCE_EXAMPLE,
            "vdev1.conf",
            "vdev_id 0 does not match the file name vdev1.conf "
            "(rule 2: the container would get no accelerator)",
        ),
        (
            edit(REFERENCE_EXAMPLE, "mem: 16384 MiB", "mem: 16384 MB"),
            "vdev0.conf",
            "mem '16384 MB' is not '<N> MiB'",
        ),
        (
            edit(REFERENCE_EXAMPLE, "mem: 16384 MiB", "mem: 16384"),
            "vdev0.conf",
            "mem '16384' is not '<N> MiB'",
        ),
        (
            edit(REFERENCE_EXAMPLE, "enable: 1", "enable: 0"),
            "vdev0.conf",
            "enable 0 is not 1; this driver writes only enabled records",
        ),
        (
            edit(REFERENCE_EXAMPLE, "0x000000003fffffff", "0x000000003FFFFFFF"),
            "vdev0.conf",
            "cu_mask '0x000000003FFFFFFF' is not 0x followed by 16 lowercase hex digits",
        ),
        (
            edit(REFERENCE_EXAMPLE, "0x000000003fffffff", "0x3fffffff"),
            "vdev0.conf",
            "cu_mask '0x3fffffff' is not 0x followed by 16 lowercase hex digits",
        ),
        (REFERENCE_EXAMPLE, "vdev00.conf", "file name 'vdev00.conf' is not vdev<N>.conf"),
        (
            REFERENCE_EXAMPLE.rstrip("\n"),
            "vdev0.conf",
            "the last line does not end with a newline (truncated file?)",
        ),
    ],
    ids=[
        "rule-1-cu-count-not-popcount",
        "rule-2-vdev-id-not-file-number",
        "rule-2-file-number-not-vdev-id",
        "mem-unit-mb",
        "mem-without-unit",
        "disabled",
        "uppercase-hex",
        "unpadded-hex",
        "bad-file-name",
        "no-final-newline",
    ],
)
def test_parse_reports_each_violation(text: str, file_name: str, problem: str) -> None:
    with pytest.raises(VdevError, match=rf"^{re.escape(file_name)}: ") as caught:
        parse_vdev(text, file_name=file_name)
    assert caught.value.problems == [problem]


def test_parse_requires_exactly_two_cu_mask_lines() -> None:
    one_mask = edit(REFERENCE_EXAMPLE, "cu_mask: 0x0000000000000000\n", "")
    with pytest.raises(VdevError) as caught:
        parse_vdev(one_mask, file_name="vdev0.conf")
    assert caught.value.problems == [
        "keys must be PciBusId, cu_mask, cu_mask, cu_count, mem, device_id, vdev_id, pipe_id, "
        "enable in this order, got PciBusId, cu_mask, cu_count, mem, device_id, vdev_id, "
        "pipe_id, enable",
        "expected exactly 2 cu_mask lines (CUs 0-63, then 64-127), found 1",
    ]
    three_masks = edit(REFERENCE_EXAMPLE, "cu_count", "cu_mask: 0x0000000000000000\ncu_count")
    with pytest.raises(VdevError, match=r".*expected exactly 2 cu_mask lines .*, found 3"):
        parse_vdev(three_masks, file_name="vdev0.conf")


def test_parse_requires_keys_in_order() -> None:
    swapped = edit(REFERENCE_EXAMPLE, "device_id: 0\nvdev_id: 0", "vdev_id: 0\ndevice_id: 0")
    with pytest.raises(VdevError, match=r"^vdev0\.conf: keys must be PciBusId, ") as caught:
        parse_vdev(swapped, file_name="vdev0.conf")
    assert len(caught.value.problems) == 1


def test_parse_reports_lines_that_are_not_key_value() -> None:
    text = edit(REFERENCE_EXAMPLE, "enable: 1", "enable=1")
    with pytest.raises(VdevError) as caught:
        parse_vdev(text, file_name="vdev0.conf")
    assert caught.value.problems[0] == "line 9 'enable=1' is not 'key: value'"
    assert "expected exactly 1 enable line, found 0" in caught.value.problems


def test_parse_collects_every_problem_in_one_error() -> None:
    text = REFERENCE_EXAMPLE
    text = edit(text, "cu_count: 30", "cu_count: 29")
    text = edit(text, "mem: 16384 MiB", "mem: 16 GiB")
    text = edit(text, "vdev_id: 0", "vdev_id: 5")
    text = edit(text, "pipe_id: 0", "pipe_id: 20")
    with pytest.raises(VdevError, match=r"^vdev0\.conf: mem '16 GiB' is not ") as caught:
        parse_vdev(text, file_name="vdev0.conf")
    assert caught.value.problems == [
        "mem '16 GiB' is not '<N> MiB'",
        "cu_count 29 is not the popcount 30 of the cu_mask words "
        "(rule 1: the runtime rejects the record)",
        "vdev_id 5 does not match the file name vdev0.conf "
        "(rule 2: the container would get no accelerator)",
        "pipe_id 20 is outside 0-19",
    ]


def test_parse_collects_range_problems_with_format_problems() -> None:
    text = edit(REFERENCE_EXAMPLE, "cu_count: 30", "cu_count: 29")
    text = edit(text, "pipe_id: 0", "pipe_id: 20")
    with pytest.raises(VdevError) as caught:
        parse_vdev(text, file_name="vdev0.conf")
    assert caught.value.problems == [
        "cu_count 29 is not the popcount 30 of the cu_mask words "
        "(rule 1: the runtime rejects the record)",
        "pipe_id 20 is outside 0-19",
    ]


# --- rule 3 ---------------------------------------------------------------------------------


def test_pipe_ids_may_repeat_on_different_cards() -> None:
    check_pipe_ids_unique(
        [config(pipe_id=0), config(pci_bus_id="0000:5e:00.0", pipe_id=0), config(pipe_id=1)]
    )


def test_rule_3_duplicate_pipe_id_on_one_card_is_refused() -> None:
    configs = [config(pipe_id=2), config(pipe_id=2), config(pipe_id=2, ordinal=1)]
    with pytest.raises(
        VdevError,
        match=r"^vdev configs: pipe_id 2 is used by 3 live shares on 0000:3b:00\.0 \(rule 3: ",
    ):
        check_pipe_ids_unique(configs)


# --- write / read ---------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Run with umask 0, so the modes checked are the ones the code sets, not the umask's."""
    old = os.umask(0)
    yield None
    os.umask(old)


def two_configs() -> list[VdevConfig]:
    return [
        config(mask=CuMask.from_cus(range(30)), pipe_id=0, ordinal=0),
        config(
            pci_bus_id="0000:5e:00.0", mask=CuMask.from_cus(range(60, 72)), pipe_id=3, ordinal=1
        ),
    ]


@pytest.mark.usefixtures("loose_umask")
def test_write_creates_0755_dir_and_0644_files_numbered_in_order(tmp_path: Path) -> None:
    directory = tmp_path / "shares" / "claim-a"
    write_vdev_dir(directory, two_configs())
    assert mode_of(directory) == 0o755
    assert sorted(p.name for p in directory.iterdir()) == ["vdev0.conf", "vdev1.conf"]
    assert all(mode_of(p) == 0o644 for p in directory.iterdir())
    assert (directory / "vdev0.conf").read_text() == REFERENCE_EXAMPLE


def test_write_tightens_an_existing_0777_dir(tmp_path: Path) -> None:
    directory = tmp_path / "claim-a"
    directory.mkdir()
    directory.chmod(0o777)
    write_vdev_dir(directory, two_configs()[:1])
    assert mode_of(directory) == 0o755


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    write_vdev_dir(tmp_path / "d", two_configs())
    assert read_vdev_dir(tmp_path / "d") == two_configs()


def test_two_shares_of_one_card_keep_its_device_id(tmp_path: Path) -> None:
    configs = [
        config(mask=CuMask.from_cus(range(8)), pipe_id=0, ordinal=0),
        replace(config(mask=CuMask.from_cus(range(8, 16)), pipe_id=1, ordinal=1), device_id=0),
    ]
    write_vdev_dir(tmp_path / "d", configs)
    assert [(c.device_id, c.vdev_id) for c in read_vdev_dir(tmp_path / "d")] == [(0, 0), (0, 1)]


def test_node_wide_numbers_need_not_start_at_zero_nor_follow_each_other(tmp_path: Path) -> None:
    # A claim's shares carry node-wide vdev numbers: 7 and 12 are as good as 0 and 1.
    configs = [replace(c, vdev_id=n) for c, n in zip(two_configs(), (7, 12), strict=True)]
    write_vdev_dir(tmp_path / "d", configs)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["vdev12.conf", "vdev7.conf"]
    assert read_vdev_dir(tmp_path / "d") == configs


def test_rewrite_is_idempotent_and_drops_stale_files(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    write_vdev_dir(directory, two_configs())
    write_vdev_dir(directory, two_configs()[:1])
    write_vdev_dir(directory, two_configs()[:1])
    assert sorted(p.name for p in directory.iterdir()) == ["vdev0.conf"]
    assert read_vdev_dir(directory) == two_configs()[:1]


@pytest.mark.parametrize(
    ("configs", "problem"),
    [
        ([], r"no vdev configs to write"),
        (
            [config(ordinal=3), replace(config(ordinal=3, pipe_id=1), device_id=0)],
            r"vdev_id 3 is given to two configs; each share needs its own file \(rule 2: ",
        ),
        (
            [config(pipe_id=4), config(pipe_id=4, ordinal=1)],
            r"pipe_id 4 is used by 2 live shares on 0000:3b:00\.0 ",
        ),
    ],
    ids=["empty", "duplicate-vdev-id", "duplicate-pipe"],
)
def test_write_refuses_bad_configs_before_touching_disk(
    tmp_path: Path, configs: list[VdevConfig], problem: str
) -> None:
    with pytest.raises(VdevError, match=rf"^\S+: {problem}"):
        write_vdev_dir(tmp_path / "d", configs)
    assert not (tmp_path / "d").exists()


def written(tmp_path: Path) -> Path:
    directory = tmp_path / "d"
    write_vdev_dir(directory, two_configs())
    return directory


def test_read_ignores_temp_files_of_an_interrupted_write(tmp_path: Path) -> None:
    directory = written(tmp_path)
    (directory / ".vdev0.conf.abc.tmp").write_text("torn")
    assert read_vdev_dir(directory) == two_configs()


def test_read_fails_closed_on_a_malformed_file(tmp_path: Path) -> None:
    directory = written(tmp_path)
    path = directory / "vdev1.conf"
    path.write_text(edit(path.read_text(), "cu_count: 12", "cu_count: 11"))
    with pytest.raises(
        VdevError, match=rf"^{re.escape(str(directory))}: vdev1\.conf: cu_count 11 is not "
    ):
        read_vdev_dir(directory)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (
            lambda d: (d / "notes.txt").write_text("x"),
            "unexpected entry 'notes.txt': only vdev<N>.conf files belong here",
        ),
        (
            lambda d: (d / "vdev0.conf").write_bytes(b"\xff\xfe"),
            "vdev0.conf: cannot read: 'ascii' codec can't decode byte 0xff in position 0: "
            "ordinal not in range(128)",
        ),
        (
            lambda d: (d / "vdev1.conf").write_text(
                render_vdev(config(mask=CuMask.from_cus([0]), ordinal=1, pipe_id=0))
            ),
            "pipe_id 0 is used by 2 live shares on 0000:3b:00.0 "
            "(rule 3: all but one would lose their device)",
        ),
        (
            lambda d: [p.unlink() for p in d.iterdir()],
            "holds no vdev<N>.conf file",
        ),
    ],
    ids=[
        "unexpected-entry",
        "not-ascii",
        "duplicate-pipe",
        "empty",
    ],
)
def test_read_fails_closed_on_anything_unexpected(
    tmp_path: Path, damage: Callable[[Path], object], problem: str
) -> None:
    directory = written(tmp_path)
    damage(directory)
    with pytest.raises(VdevError) as caught:
        read_vdev_dir(directory)
    assert problem in caught.value.problems
    assert str(caught.value).startswith(f"{directory}: ")


def test_read_of_a_missing_dir_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(
        VdevError,
        match=rf"^{re.escape(str(tmp_path))}/missing: cannot list: No such file or directory$",
    ):
        read_vdev_dir(tmp_path / "missing")


def test_read_collects_problems_of_several_files(tmp_path: Path) -> None:
    directory = written(tmp_path)
    for name in ("vdev0.conf", "vdev1.conf"):
        path = directory / name
        path.write_text(edit(path.read_text(), "enable: 1", "enable: 2"))
    with pytest.raises(VdevError) as caught:
        read_vdev_dir(directory)
    assert [p.split(":")[0] for p in caught.value.problems] == ["vdev0.conf", "vdev1.conf"]
