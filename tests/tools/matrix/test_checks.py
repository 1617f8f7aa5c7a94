from __future__ import annotations

from dra_driver.tools.matrix.checks import CheckFailedError, claim_pod, run_check
from dra_driver.tools.matrix.model import FAIL, PASS


def test_a_check_that_returns_passes_with_what_it_saw() -> None:
    result = run_check("slice", lambda: "3 devices")
    assert (result.check, result.status, result.detail) == ("slice", PASS, "3 devices")
    assert result.seconds >= 0


def test_a_check_that_raises_fails_with_the_error() -> None:
    def broken() -> str:
        raise CheckFailedError("device x lost allowMultipleAllocations")

    result = run_check("slice", broken)
    assert result.status == FAIL
    assert result.detail == "CheckFailedError: device x lost allowMultipleAllocations"


def test_a_claim_pod_runs_the_pause_image_on_the_node_with_its_own_claim() -> None:
    claim, pod = claim_pod("share-0", "127.0.0.2", {"deviceClassName": "dcu.hygon.com"})
    assert claim["spec"]["devices"]["requests"] == [
        {"name": "dcu", "exactly": {"deviceClassName": "dcu.hygon.com"}}
    ]
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "127.0.0.2"}
    assert pod["spec"]["resourceClaims"] == [{"name": "dcu", "resourceClaimName": "share-0"}]
    assert pod["spec"]["containers"][0]["resources"] == {"claims": [{"name": "dcu"}]}
