"""The host config: schema, conversion, secrets never read from or echoed by the YAML."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import hostconfig
from reconciler.errors import InputError
from reconciler.model import HookConfig, Limits, TargetConfig, VCenterConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "vmkeep.example.yaml"

GOOD = b"""\
vcenters:
  prod:
    url: https://vc.example.com
    username: svc-backup@vsphere.local
    passwordEnv: VMKEEP_PROD_PASSWORD
    caFile: certs/prod-ca.pem
  lab:
    url: https://10.0.0.5
    username: root
    passwordFile: /etc/vmkeep/lab.password
    insecure: true
    readers: thread
targets:
  nas: {type: directory, path: /mnt/nas/vmkeep, chunkSize: 4194304}
  local: {type: directory, path: exports, directWrites: "off"}
state: state/vmkeep.db
limits: {maxDeletesPerRun: 10, concurrentExports: 4}
hooks:
  flush-db: {command: [bin/flush, --all], timeout: 2m}
  notify: {command: [logger, vmkeep]}
"""


def parse(text: bytes) -> object:
    return hostconfig.parse(text, "/etc/vmkeep/vmkeep.yaml")


def problems(text: bytes) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse(text)
    return [str(d) for d in caught.value.diagnostics]


def test_a_full_config_is_converted_with_paths_relative_to_its_file() -> None:
    config = hostconfig.parse(GOOD, "/etc/vmkeep/vmkeep.yaml")
    assert config.vcenters["prod"] == VCenterConfig(
        "prod", "https://vc.example.com", "svc-backup@vsphere.local",
        password_env="VMKEEP_PROD_PASSWORD", ca_file="/etc/vmkeep/certs/prod-ca.pem")
    assert config.vcenters["lab"].insecure and config.vcenters["lab"].password_file
    assert (config.vcenters["prod"].readers, config.vcenters["lab"].readers) == (
        "process", "thread")
    assert config.targets["nas"] == TargetConfig("nas", "directory", "/mnt/nas/vmkeep", 4194304)
    assert config.targets["local"].path == "/etc/vmkeep/exports"
    assert (config.targets["nas"].direct_writes, config.targets["local"].direct_writes) == (
        "auto", "off")
    assert config.state == "/etc/vmkeep/state/vmkeep.db"
    assert config.limits == Limits(10, 4, Limits().concurrent_snapshots_per_host)
    assert config.hooks["flush-db"] == HookConfig("flush-db", ("/etc/vmkeep/bin/flush", "--all"),
                                                  120.0)
    assert config.hooks["notify"].command == ("logger", "vmkeep")
    assert config.hooks["notify"].timeout_seconds == 300.0


def test_an_empty_config_gets_defaults() -> None:
    config = hostconfig.parse(b"{}\n", "conf/vmkeep.yaml")
    assert config.vcenters == {} and config.state == "conf/vmkeep.db"


@pytest.mark.parametrize(("text", "limit"), [
    (b"{}\n", 0),
    (b"limits: {concurrentExportsPerDatastore: 3}\n", 3),
], ids=["unlimited by default", "set"])
def test_exports_per_datastore_are_unlimited_unless_limited(text: bytes, limit: int) -> None:
    config = hostconfig.parse(text, "conf/vmkeep.yaml")
    assert config.limits.concurrent_exports_per_datastore == limit


def test_a_literal_password_is_refused_without_echoing_it() -> None:
    found = problems(b"vcenters:\n  prod:\n    url: https://vc\n    username: u\n"
                     b"    password: s3cr3t-Value\n")
    assert any(":5:5: a literal `password` is not allowed" in p for p in found)
    assert any("passwordEnv" in p for p in found)
    assert not any("s3cr3t" in p for p in found)


def test_secrets_in_wrong_places_are_never_echoed() -> None:
    found = problems(b"vcenters:\n  prod:\n    url: s3cr3t\n    username: [s3cr3t]\n"
                     b"    passwordEnv: s3cr3t-x\n    thumbprint: s3cr3t\n")
    assert found and not any("s3cr3t" in p for p in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"vcenters:\n  prod: {url: https://vc, username: u}\n",
         ":2:3: Give exactly one of `passwordEnv` or `passwordFile`"),
        (b"vcenters:\n  prod: {url: https://vc, username: u, passwordEnv: A, passwordFile: b}\n",
         ":2:3: Give exactly one of"),
        (b"vcenters:\n  prod: {url: https://vc, username: u, passwordEnv: A, insecure: true,"
         b" caFile: x}\n", ":2:3: Give at most one of `caFile`, `thumbprint` or `insecure`"),
        (b"vcenters:\n  prod: {url: http://vc, username: u, passwordEnv: A}\n",
         ":2:15: `vcenters.prod.url`: is not a valid https:// URL"),
        (b"vcenters:\n  Prod: {url: https://vc, username: u, passwordEnv: A}\n",
         ":2:3: key `Prod` in `vcenters` is not a valid name"),
        (b"vcenters:\n  prod: {url: https://vc, username: u, passwordEnv: A, readers: fork}\n",
         ":2:65: `vcenters.prod.readers` must be one of"),
        (b"targets:\n  nas: {type: s3, path: x}\n", ":2:15: `targets.nas.type` must be one of"),
        (b"targets:\n  nas: {type: directory, path: x, chunkSize: 100000}\n",
         ":2:46: `targets.nas.chunkSize` must be a power of two"),
        (b"targets:\n  nas: {type: directory, path: x, directWrites: always}\n",
         ":2:49: `targets.nas.directWrites` must be one of"),
        (b"limits: {maxDeletesPerRun: -1}\n",
         ":1:28: `limits.maxDeletesPerRun` must be at least 0"),
        (b"limits: {concurrentExportsPerDatastore: -1}\n",
         "`limits.concurrentExportsPerDatastore` must be at least 0"),
        (b"limts: {}\n", ":1:1: unknown key `limts` (did you mean `limits`?)"),
        (b"hooks:\n  x: {command: []}\n", ":2:16: `hooks.x.command` must not be empty"),
        (b"hooks:\n  x: {command: [a], timeout: 1mo}\n", ":2:30: `hooks.x.timeout`: duration 1mo"),
        (b"hooks:\n  x: {command: 'rm -rf /'}\n", ":2:16: `hooks.x.command` must be a list"),
        (b"state: 1\nstate: 2\n", ":2:1: duplicate key `state`"),
        (b"a: 1\n---\nb: 2\n", ":3:1: the host config must be a single YAML document"),
        (b"", ":1:1: the host config is empty"),
        (b"- a\n", ":1:1: a document must be a mapping"),
    ],
)
def test_config_problems_are_reported_at_their_location(text: bytes, expected: str) -> None:
    assert any(expected in p for p in problems(text)), problems(text)


def test_the_documented_example_config_is_valid() -> None:
    config = hostconfig.parse(EXAMPLE.read_bytes(), str(EXAMPLE))
    assert config.vcenters and config.targets and config.hooks


@settings(max_examples=int(os.environ.get("VMKEEP_PROPERTY_EXAMPLES", "200")), deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 3),
                          st.sampled_from([b":", b" ", b"\n", b"[", b"{", b"'", b"\xff", b"-",
                                           b"password: Zq9-SECRET\n    "])), max_size=4))
def test_any_mutation_of_a_config_gives_a_config_or_located_errors_without_secrets(edits) -> None:
    data = GOOD
    for where, cut, insert in edits:
        at = int(where * len(data))
        data = data[:at] + insert + data[at + cut :]
    try:
        hostconfig.parse(data, "c.yaml")
    except InputError as exc:
        assert exc.diagnostics
        assert "Zq9-SECRET" not in str(exc)


# --------------------------------------------------------------------------- secrets (issue 9 C)


def test_a_vcenter_url_with_user_and_password_is_refused_without_repeating_them() -> None:
    found = problems(b"vcenters:\n  prod:\n    url: https://admin:Hunter2-PW@vc.example.com/sdk\n"
                     b"    username: admin\n    passwordEnv: VC_PW\n")
    assert found == [
        "/etc/vmkeep/vmkeep.yaml:3:10: `vcenters.prod.url` must not contain a user name or "
        "password (`user:...@`) (give the user in `username` and the password through "
        "`passwordEnv` or `passwordFile`)"
    ]


def test_a_vcenter_url_with_a_user_name_only_is_refused_too() -> None:
    found = problems(b"vcenters:\n  prod: {url: 'https://admin@vc', username: a, "
                     b"passwordEnv: VC_PW}\n")
    assert len(found) == 1 and "must not contain a user name" in found[0]


def test_a_hook_may_set_variables_of_its_own() -> None:
    config = hostconfig.parse(
        b"hooks:\n  dump: {command: [/bin/dump], env: {PGHOST: db1, PGUSER: backup}}\n", "c.yaml")
    assert config.hooks["dump"].env == {"PGHOST": "db1", "PGUSER": "backup"}


def test_a_hook_may_not_be_given_a_vcenter_password_variable() -> None:
    found = problems(b"vcenters:\n  prod: {url: 'https://vc', username: a, passwordEnv: VC_PW}\n"
                     b"hooks:\n  dump:\n    command: [/bin/dump]\n    env: {VC_PW: x}\n")
    assert found == [
        "/etc/vmkeep/vmkeep.yaml:6:11: `hooks.dump.env` must not set `VC_PW`: it holds a "
        "vCenter password (`passwordEnv`) (hooks never get vCenter passwords; give the hook its "
        "own credentials)"
    ]


def test_a_password_variable_may_not_be_one_every_hook_gets() -> None:
    found = problems(b"vcenters:\n  prod: {url: 'https://vc', username: a, passwordEnv: PATH}\n")
    assert len(found) == 1 and "names a variable every hook gets" in found[0]


@pytest.mark.parametrize(
    "key",
    ["Zq9-SECRET!", "correct horse battery", "S3cr3tPassw0rd", "a" * 41, "p@ss", "x:y",
     "hunter2", "password123", "XkQzPwLm"],
)
def test_a_key_that_looks_like_a_value_is_not_repeated(key: str) -> None:
    text = f"vcenters:\n  prod:\n    url: https://vc\n    username: a\n    passwordEnv: A\n" \
           f"    {key!r}: 1\n".encode()
    found = problems(text)
    assert len(found) == 1, found
    assert key not in found[0]
    assert found[0].startswith("/etc/vmkeep/vmkeep.yaml:6:5: unknown key in `vcenters.prod` "
                               "(not repeated: it looks like a value, perhaps a secret)")


@pytest.mark.parametrize("key", ["usernme", "password_env", "ca-file", "caFil"])
def test_a_key_that_reads_as_a_name_is_repeated_with_a_suggestion(key: str) -> None:
    found = problems(f"vcenters:\n  prod: {{url: 'https://vc', username: a, passwordEnv: A, "
                     f"{key}: 1}}\n".encode())
    assert len(found) == 1 and f"unknown key `{key}`" in found[0], found


def test_a_duplicate_name_with_digits_is_repeated() -> None:
    found = problems(b"vcenters:\n  vc2: {url: 'https://a', username: a, passwordEnv: A}\n"
                     b"  vc2: {url: 'https://b', username: b, passwordEnv: B}\n")
    assert any(":3:3: duplicate key `vc2` in `vcenters`" in p for p in found), found


def test_a_duplicate_key_that_looks_like_a_value_is_not_repeated() -> None:
    found = problems(b"hooks: {}\n'Pa55 word!': 1\n'Pa55 word!': 2\n")
    assert any(":3:1: duplicate key (not repeated" in p for p in found), found
    assert not any("Pa55" in p for p in found)


def test_a_nul_character_in_any_value_is_refused_at_its_location() -> None:
    found = problems(b'targets:\n  nas: {type: directory, path: "/mnt/a\\0b"}\nstate: "s\\0"\n')
    assert found == [
        "/etc/vmkeep/vmkeep.yaml:2:32: `targets.nas.path` contains a NUL character (remove the "
        "`\\0`)",
        "/etc/vmkeep/vmkeep.yaml:3:8: `state` contains a NUL character (remove the `\\0`)",
    ]
