"""``dcu-dra status`` / ``kubectl dcu status`` without a cluster: flags, errors, redraws."""

from __future__ import annotations

import io
import queue
import sys
from pathlib import Path

import pytest

from dra_driver import cli
from dra_driver.tools.status import ClusterStatus, Output
from dra_driver.tools.status.run import CLEAR_SCREEN, _draw, _frame
from dra_driver.tools.status.source import Event, EventType, Kind, StatusError, Store, wait_quiet


def test_kubectl_dcu_offers_status_under_kubectls_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.kubectl_dcu_main(["status", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "usage: kubectl dcu status [-h] [--node NAME] [-o {table,wide,json,yaml}]"
    )
    assert "--context" in out and "--kubeconfig" in out and "--watch" in out


def test_kubectl_dcu_has_no_node_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.kubectl_dcu_main(["kubelet-plugin"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'kubelet-plugin'" in capsys.readouterr().err


def test_no_kubeconfig_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["status", "--kubeconfig", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err == (
        f"dcu-dra status: error: no cluster: no kubeconfig at {tmp_path / 'missing'} (give "
        "--kubeconfig, set KUBECONFIG, or run inside a pod)\n"
    )


def test_an_unknown_context_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    assert cli.main(["status", "--kubeconfig", str(kubeconfig), "--context", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dcu-dra status: error: no cluster: kubeconfig {kubeconfig}: ")
    assert "nope" in err and err.count("\n") == 1


def test_an_unreachable_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    assert cli.main(["status", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "dcu-dra status: error: cannot reach the API server at https://127.0.0.1:1: "
    )
    assert "Connection refused" in err and err.count("\n") == 1


def test_a_missing_client_gives_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in list(sys.modules):
        if module.startswith(("kubernetes", "dra_driver.tools.status.")):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    assert cli.main(["status"]) == 1
    assert capsys.readouterr().err == (
        "dcu-dra status: error: needs the Kubernetes Python client: pip install 'dcu-dra[status]'\n"
    )


def test_the_store_follows_lists_and_events() -> None:
    store = Store()
    pod = {"metadata": {"uid": "u1", "name": "p"}}
    for kind in Kind:
        store.apply(Event(kind, EventType.RESET, items=[pod] if kind is Kind.PODS else []))
    assert store.is_complete
    store.apply(Event(Kind.PODS, EventType.ADDED, items=[{"metadata": {"uid": "u2"}}]))
    store.apply(Event(Kind.PODS, EventType.DELETED, items=[pod]))
    assert store.snapshot().pods == [{"metadata": {"uid": "u2"}}]
    with pytest.raises(StatusError, match=r"^gone$"):
        store.apply(Event(Kind.PODS, EventType.ERROR, error=StatusError("gone")))


def test_a_burst_of_events_is_one_batch() -> None:
    events: queue.Queue[Event] = queue.Queue()
    for _ in range(3):
        events.put(Event(Kind.PODS, EventType.ADDED))
    first = Event(Kind.SLICES, EventType.ADDED)
    assert len(wait_quiet(events, first, settle_s=0.05)) == 4


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_cleared_before_each_frame_and_a_pipe_is_not() -> None:
    frame = _frame(ClusterStatus(devices=(), pending=()), Output.TABLE)
    terminal, pipe = Terminal(), io.StringIO()
    _draw(frame, Output.TABLE, terminal)
    _draw(frame, Output.TABLE, pipe)
    assert terminal.getvalue().startswith(CLEAR_SCREEN + "dcu-dra status (watching, ")
    assert pipe.getvalue() == frame + "\n"
    json_frame = _frame(ClusterStatus(devices=(), pending=()), Output.JSON)
    assert json_frame.count("\n") == 1  # one document per line
