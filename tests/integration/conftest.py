"""The vSphere simulator for integration tests (started through `scripts/vcsim`).

Fixtures:

* `vcsim` — one 2,000-VM simulator for the whole session; read-only tests only.
* `vcsim_small` — one 20-VM simulator for the whole session; read-only tests only.
* `start_vcsim` — a factory of fresh simulators (stopped after the test) for tests that
  create snapshots, change faults or otherwise mutate.

Every simulator requires its own user and password (wrong ones get InvalidLogin) and serves
TLS with a certificate from its own CA (`Simulator.ca_file`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pyVmomi import SoapStubAdapter, vim

from reconciler.model import VCenterConfig

REPO = Path(__file__).resolve().parents[2]
VCSIM = REPO / "scripts" / "vcsim"


def no_sleep(_: float) -> None:
    """For `VSphereClient(sleep=...)`: retry without waiting."""


@dataclass
class Simulator:
    """A running simulator, as `scripts/vcsim start` described it."""

    info: dict[str, Any]
    _admin: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def ca_file(self) -> str:
        return str(self.info["caFile"])

    @property
    def username(self) -> str:
        return str(self.info["username"])

    @property
    def password(self) -> str:
        return str(self.info["password"])

    @property
    def state_dir(self) -> Path:
        return Path(self.info["stateDir"])

    @property
    def vm_count(self) -> int:
        return int(self.info["vms"])

    def config(self, name: str = "sim", **changes: Any) -> VCenterConfig:
        """A host-config entry for this simulator, verifying its CA unless changed."""
        base = VCenterConfig(
            name=name,
            url=self.url,
            username=self.username,
            password_env="VMKEEP_SIM_PASSWORD",
            ca_file=self.ca_file,
        )
        return replace(base, **changes)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    # ------------------------------------------------------------- control API

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.info['controlUrl']}/{path}", data=data, method="GET" if body is None else "POST"
        )
        with urllib.request.urlopen(request, context=self.ssl_context(), timeout=30) as response:
            return json.loads(response.read())

    def faults(self, **config: Any) -> dict[str, Any]:
        """Change fault injection: keys as in the control API (failSnapshot, taskDelayMs…)."""
        return dict(self.control("faults", config))

    def stats(self) -> dict[str, Any]:
        return dict(self.control("stats"))

    def reset_stats(self) -> None:
        self.control("stats/reset", {})

    def terminate_sessions(self) -> int:
        return int(self.control("sessions/terminate", {})["terminated"])

    # ------------------------------------------------------------- test set-up

    def admin(self) -> Any:
        """A logged-in pyVmomi ServiceContent for setting things up (its own session)."""
        if self._admin is None:
            parts = urlsplit(self.url)
            stub = SoapStubAdapter(
                host=parts.hostname, port=parts.port, path="/sdk",
                version="vim.version.version11", sslContext=self.ssl_context(),
            )
            content: Any = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
            content.sessionManager.Login(self.username, self.password)
            self._admin = content
        return self._admin

    def vm(self, name: str) -> Any:
        content = self.admin()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            for vm in view.view:
                if vm.name == name:
                    return vm
        finally:
            view.DestroyView()
        raise LookupError(name)

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        """One call to the vAPI REST endpoint (tagging) with a fresh session."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                           context=self.ssl_context(), timeout=30)
        try:
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            conn.request("POST", "/rest/com/vmware/cis/session",
                         headers={"Authorization": f"Basic {basic}"})
            response = conn.getresponse()
            session = json.loads(response.read())["value"]
            headers = {"vmware-api-session-id": session, "Content-Type": "application/json"}
            conn.request(method, "/rest" + path,
                         body=None if body is None else json.dumps(body), headers=headers)
            response = conn.getresponse()
            payload = response.read()
            assert response.status < 300, (response.status, payload)
            return json.loads(payload).get("value") if payload else None
        finally:
            conn.close()

    def stop(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.sessionManager.Logout()
            self._admin = None
        run_vcsim("stop", "--state-dir", str(self.state_dir))


def run_vcsim(*args: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, str(VCSIM), *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/vcsim {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def start_simulator(state_dir: Path, *args: str, vms: int = 20) -> Simulator:
    """Start a simulator requiring a random password; `args` are more `start` flags."""
    password = "pw-" + secrets.token_hex(8)
    out = run_vcsim(
        "start", "--state-dir", str(state_dir), "--vms", str(vms),
        "--username", "vmkeep", "--password", password, *args,
    )
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"scripts/vcsim start printed {len(lines)} lines: {out!r}"
    return Simulator(json.loads(lines[0]))


def module_simulator(label: str, vms: int) -> Any:
    """A module-scoped `sim` fixture: one simulator of `vms` VMs for a test module whose
    tests change it (so it cannot be a session's shared, read-only one). In the module:
    `sim = module_simulator("vcsim-faults", vms=3)`."""

    @pytest.fixture(scope="module", name="sim")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
        run_vcsim("build", timeout=900)  # a no-op when .cache/vcsim is up to date
        simulator = start_simulator(tmp_path_factory.mktemp(label), vms=vms)
        yield simulator
        simulator.stop()

    return fixture


@pytest.fixture(scope="session")
def vcsim_built() -> None:
    """Build the simulator once (a no-op when .cache/vcsim is up to date)."""
    run_vcsim("build", timeout=900)


@pytest.fixture(scope="session")
def vcsim(vcsim_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """A 2,000-VM simulator shared by the session's read-only tests."""
    sim = start_simulator(tmp_path_factory.mktemp("vcsim-2000"), vms=2000)
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def vcsim_small(
    vcsim_built: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Simulator]:
    """A 20-VM simulator shared by the session's read-only tests."""
    sim = start_simulator(tmp_path_factory.mktemp("vcsim-20"), vms=20)
    yield sim
    sim.stop()


#: The type of the `start_vcsim` fixture.
StartVcsim = Callable[..., Simulator]


@pytest.fixture
def start_vcsim(
    vcsim_built: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Simulator]]:
    """Start fresh simulators for one test: `start_vcsim("--task-delay", "50", vms=5)`."""
    started: list[Simulator] = []

    def start(*args: str, vms: int = 5) -> Simulator:
        sim = start_simulator(tmp_path_factory.mktemp("vcsim"), *args, vms=vms)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def sim_password(monkeypatch: pytest.MonkeyPatch) -> Callable[[Simulator], str]:
    """Put a simulator's password into $VMKEEP_SIM_PASSWORD (what `Simulator.config` names)."""

    def use(sim: Simulator) -> str:
        monkeypatch.setenv("VMKEEP_SIM_PASSWORD", sim.password)
        return sim.password

    return use


@pytest.fixture
def http_requests(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count HTTP requests made through http.client (what pyVmomi's stub uses), by
    "METHOD path-without-query"; the SOAP method is not visible at this layer."""
    counts: Counter[str] = Counter()
    original = http.client.HTTPConnection.request

    def counting(self: http.client.HTTPConnection, method: str, url: str,
                 *args: Any, **kwargs: Any) -> None:
        counts[f"{method} {url.split('?')[0]}"] += 1
        original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(http.client.HTTPConnection, "request", counting)
    return counts


def process_alive(pid: int) -> bool:
    """Whether `pid` runs: not gone, not a zombie waiting to be reaped, not dead."""
    try:
        os.kill(pid, 0)
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return fields[0] not in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
