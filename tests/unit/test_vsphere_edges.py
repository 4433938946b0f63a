"""The vSphere adapter's small pure pieces: retries, URL and thumbprint parsing, REST tags."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from reconciler.adapters.retry import RetryPolicy, call_with_retries
from reconciler.adapters.vsphere_tags import TagsUnavailable, read_vm_tags
from reconciler.adapters.vsphere_tls import Endpoint, Pin, endpoint_of, fingerprint, pin_of
from reconciler.errors import TransientError, VCenterError
from reconciler.model import VCenterConfig

# --------------------------------------------------------------------------- retry


def test_retries_back_off_exponentially_up_to_the_cap_then_give_up() -> None:
    waits: list[float] = []
    calls = []

    def flaky() -> None:
        calls.append(1)
        raise TransientError("vc", "read: connection reset", 0.0)

    policy = RetryPolicy(attempts=6, base_delay=1.0, max_delay=5.0, jitter=0.0)
    with pytest.raises(TransientError) as caught:
        call_with_retries(flaky, policy, sleep=waits.append)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert len(calls) == 6
    assert str(caught.value) == "vCenter 'vc': read: connection reset (gave up after 6 attempts)"


def test_a_success_after_failures_returns_its_value() -> None:
    outcomes: list[Any] = [TransientError("vc", "busy", 3.0), "done"]

    def op() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    waits: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay=0.5, jitter=0.0)
    assert call_with_retries(op, policy, sleep=waits.append) == "done"
    assert waits == [3.0]  # the error's own delay hint wins over a shorter backoff


def test_other_errors_are_not_retried() -> None:
    def op() -> None:
        raise VCenterError("vc", "InvalidArgument")

    with pytest.raises(VCenterError):
        call_with_retries(op, RetryPolicy(), sleep=lambda _: pytest.fail("slept"))


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(base_delay=1.0, jitter=0.1)
    assert all(0.9 <= policy.delay(1) <= 1.1 for _ in range(200))


# --------------------------------------------------------------------------- TLS helpers


def config(**changes: Any) -> VCenterConfig:
    return VCenterConfig(name="vc", url=changes.pop("url", "https://vc.example.com/sdk"),
                         username="u", **changes)


@pytest.mark.parametrize(("url", "endpoint"), [
    ("https://vc.example.com/sdk", Endpoint("vc.example.com", 443, "/sdk")),
    ("https://vc.example.com", Endpoint("vc.example.com", 443, "/sdk")),
    ("https://10.0.0.5:8443/sdk/", Endpoint("10.0.0.5", 8443, "/sdk")),
    ("https://[::1]:9443/sdk", Endpoint("::1", 9443, "/sdk")),
])
def test_urls_give_host_port_and_path(url: str, endpoint: Endpoint) -> None:
    assert endpoint_of(config(url=url)) == endpoint


@pytest.mark.parametrize("url", ["http://vc/sdk", "vc.example.com", "https://:443/sdk",
                                 "https://vc:notaport/sdk"])
def test_bad_urls_are_refused_with_the_vcenter_named(url: str) -> None:
    with pytest.raises(VCenterError, match=r"^vCenter 'vc': url "):
        endpoint_of(config(url=url))


def test_thumbprints_are_accepted_in_any_usual_spelling() -> None:
    sha1 = "AB:" * 19 + "AB"
    assert pin_of(config(thumbprint=sha1)) == Pin("sha1", "ab" * 20)
    assert pin_of(config(thumbprint="cd" * 32)) == Pin("sha256", "cd" * 32)
    assert pin_of(config()) is None
    for bad in ("AB:CD", "zz" * 20):
        with pytest.raises(VCenterError, match="SHA-1 or SHA-256"):
            pin_of(config(thumbprint=bad))


def test_fingerprints_are_shown_as_vsphere_shows_them() -> None:
    # sha1(b"x") = 11f6ad8ec52a2984abaafd7c3b516503785c2072
    assert fingerprint(b"x", "sha1") == (
        "11:F6:AD:8E:C5:2A:29:84:AB:AA:FD:7C:3B:51:65:03:78:5C:20:72"
    )


# --------------------------------------------------------------------------- REST tags


class FakeResponse:
    def __init__(self, status: int, body: Any = None) -> None:
        self.status = status
        self.reason = "reason"
        self.body = b"" if body is None else json.dumps({"value": body}).encode()

    def read(self) -> bytes:
        return self.body


class FakeConnection:
    """Answers REST calls from a table of (method, path) → (status, value)."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, Any]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.closed = False

    def request(self, method: str, url: str, body: Any = None,
                headers: dict[str, str] | None = None) -> None:
        self.requests.append((method, url, dict(headers or {}), body))

    def getresponse(self) -> FakeResponse:
        method, url, _, _ = self.requests[-1]
        status, value = self.answers.get((method, url), (404, None))
        return FakeResponse(status, value)

    def close(self) -> None:
        self.closed = True


T = "/rest/com/vmware/cis/tagging"


def tag_api(**overrides: tuple[int, Any]) -> FakeConnection:
    answers: dict[tuple[str, str], tuple[int, Any]] = {
        ("POST", "/rest/com/vmware/cis/session"): (200, "token-1"),
        ("DELETE", "/rest/com/vmware/cis/session"): (200, None),
        ("GET", f"{T}/tag"): (200, ["urn:t1", "urn:t2", "urn:t3"]),
        ("GET", f"{T}/tag/id:urn:t1"): (200, {"name": "gold", "category_id": "urn:c1"}),
        ("GET", f"{T}/tag/id:urn:t2"): (200, {"name": "daily", "category_id": "urn:c1"}),
        ("GET", f"{T}/tag/id:urn:t3"): (200, {"name": "prod", "category_id": "urn:c2"}),
        ("GET", f"{T}/category/id:urn:c1"): (200, {"name": "backup"}),
        ("GET", f"{T}/category/id:urn:c2"): (200, {"name": "env"}),
        ("POST", f"{T}/tag-association?~action=list-attached-objects-on-tags"): (200, [
            {"tag_id": "urn:t1", "object_ids": [{"id": "vm-1", "type": "VirtualMachine"},
                                               {"id": "host-1", "type": "HostSystem"}]},
            {"tag_id": "urn:t2", "object_ids": [{"id": "vm-1", "type": "VirtualMachine"}]},
            {"tag_id": "urn:t3", "object_ids": [{"id": "vm-2", "type": "VirtualMachine"}]},
        ]),
    }
    answers.update({(k.split(" ", 1)[0], k.split(" ", 1)[1]): v for k, v in overrides.items()})
    return FakeConnection(answers)


def test_tags_come_back_per_vm_as_sorted_category_slash_name() -> None:
    conn = tag_api()
    tags = read_vm_tags(lambda: conn, "user", "pw")  # type: ignore[arg-type,return-value]
    assert tags == {"vm-1": ("backup/daily", "backup/gold"), "vm-2": ("env/prod",)}
    login = conn.requests[0]
    assert login[2]["Authorization"] == "Basic dXNlcjpwdw=="
    assert all(r[2]["vmware-api-session-id"] == "token-1" for r in conn.requests[1:])
    # One read per tag and per category in use, never per VM; logged out and closed.
    assert len(conn.requests) == 1 + 1 + 3 + 2 + 1 + 1
    assert conn.requests[-1][0] == "DELETE" and conn.closed


def test_a_vcenter_without_the_rest_api_has_no_tags() -> None:
    conn = FakeConnection({})
    with pytest.raises(TagsUnavailable, match="HTTP 404"):
        read_vm_tags(lambda: conn, "u", "p")  # type: ignore[arg-type,return-value]
    assert conn.closed


def test_a_server_error_is_left_for_the_caller_to_retry() -> None:
    conn = tag_api(**{f"GET {T}/tag": (503, None)})
    with pytest.raises(http.client.HTTPException, match="503"):
        read_vm_tags(lambda: conn, "u", "p")  # type: ignore[arg-type,return-value]
    assert conn.requests[-1][0] == "DELETE"  # still logged out
