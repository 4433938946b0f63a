"""The host config: YAML on the management host, checked against `schemas/config.schema.json`.

`parse(data, path)` returns a `model.HostConfig` or raises `InputError` with every problem,
each at its `file:line:column`. Secrets never appear in the YAML: a vCenter names the
environment variable (`passwordEnv`) or file (`passwordFile`) that holds its password, and a
literal `password:` key is refused with a message that does not repeat its value (schema
messages here never echo values at all). Relative paths are resolved against the directory
of the config file (string operations only: this module does no I/O).
"""

from __future__ import annotations

import json
import posixpath
from functools import cache
from pathlib import Path, PurePath
from typing import Any

from jsonschema import Draft202012Validator

from reconciler import documents, durations, engine_config, schema_messages
from reconciler.errors import Diagnostic, InputError
from reconciler.model import (
    HOOK_PASSTHROUGH,
    HookConfig,
    HostConfig,
    Hygiene,
    Limits,
    PolicySourceConfig,
    TargetConfig,
    VCenterConfig,
)

__all__ = ["SCHEMA_PATH", "parse", "schema", "validator"]

#: `reconciler/schemas` links to the project's `schemas/` and is shipped in the wheel.
SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.json"

_FORBIDDEN = {
    "password": (
        "a literal `password` is not allowed in the host config",
        "name an environment variable with `passwordEnv: VMKEEP_VC_PASSWORD`, or a file with "
        "`passwordFile: /etc/vmkeep/vc.password`",
    ),
}


@cache
def schema() -> dict[str, Any]:
    """The host config JSON Schema (read once, from the package's `schemas/`)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@cache
def validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def parse(data: bytes, path: str) -> HostConfig:
    """Read, validate and convert a host config file; raise `InputError` on any problem."""
    loaded = documents.load(data, path)
    problems = list(loaded.diagnostics)
    if not loaded.documents:
        if not problems:
            problems.append(Diagnostic(
                path, 1, 1, "the host config is empty",
                "see docs/configuration.md for the keys (vcenters, targets, state, ...)",
            ))
        raise InputError(problems)
    if len(loaded.documents) > 1:
        extra = loaded.documents[1]
        problems.append(extra.diagnostic((), "the host config must be a single YAML document",
                                         "remove the `---` and merge the documents"))
    doc = loaded.documents[0]
    problems.extend(_nul_characters(doc))
    found, wrong = schema_messages.schema_diagnostics(
        doc, validator(), echo_values=False, forbidden_keys=_FORBIDDEN
    )
    problems.extend(found)
    config = _convert(doc, problems, wrong)
    if problems:
        raise InputError(problems)
    return config


def _nul_characters(doc: documents.Document) -> list[Diagnostic]:
    """Every string holding a NUL character (`"\\0"` in YAML): no path, name or command can
    hold one, and the operating system would refuse it later, less clearly."""
    found: list[Diagnostic] = []
    stack: list[tuple[documents.Where, Any]] = [((), doc.data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*where, k), v) for k, v in value.items())
            found.extend(doc.diagnostic((*where, k), "a key contains a NUL character",
                                        "remove the `\\0`", key=True)
                         for k in value if "\x00" in k)
        elif isinstance(value, list):
            stack.extend(((*where, i), v) for i, v in enumerate(value))
        elif isinstance(value, str) and "\x00" in value:
            found.append(doc.diagnostic(where, f"`{documents.dotted(where)}` contains a NUL "
                                        "character", "remove the `\\0`"))
    return found


def _check_url(doc: documents.Document, name: str, url: object,
               problems: list[Diagnostic], wrong: set[documents.Where]) -> None:
    """A URL with user info (`https://user:password@host`) is refused: the password would be
    in the file, and in every message that shows the URL."""
    where = ("vcenters", name, "url")
    if where in wrong or not isinstance(url, str):
        return
    authority = url.partition("://")[2].partition("/")[0]
    if "@" in authority:
        problems.append(doc.diagnostic(
            where,
            f"`vcenters.{name}.url` must not contain a user name or password (`user:...@`)",
            "give the user in `username` and the password through `passwordEnv` or "
            "`passwordFile`",
        ))


def _resolve(base: PurePath, value: str) -> str:
    candidate = PurePath(value)
    return str(candidate if candidate.is_absolute() else base / candidate)


def _timeout(doc: documents.Document, where: documents.Where, text: Any,
             problems: list[Diagnostic], wrong: set[documents.Where]) -> float:
    if text is None:
        return 300.0
    if where in wrong or not isinstance(text, str):
        return 0.0
    try:
        return durations.to_timedelta(durations.parse(text)).total_seconds()
    except durations.DurationError as exc:
        problems.append(doc.diagnostic(where, f"`{documents.dotted(where)}`: {exc}"))
        return 0.0


def _convert(
    doc: documents.Document, problems: list[Diagnostic], wrong: set[documents.Where]
) -> HostConfig:
    """Build the model from a document; values the schema rejected are skipped."""
    data: dict[str, Any] = doc.data
    base = PurePath(doc.path).parent

    def section(name: str) -> dict[str, Any]:
        value = data.get(name)
        return value if isinstance(value, dict) else {}

    def entries(name: str) -> list[tuple[str, dict[str, Any]]]:
        return [(k, v) for k, v in section(name).items()
                if isinstance(v, dict) and (name, k) not in wrong]

    vcenters = {}
    for name, vc in entries("vcenters"):
        _check_url(doc, name, vc.get("url"), problems, wrong)
        if vc.get("passwordEnv") in HOOK_PASSTHROUGH:
            problems.append(doc.diagnostic(
                ("vcenters", name, "passwordEnv"),
                f"`vcenters.{name}.passwordEnv` names a variable every hook gets",
                "use a variable of its own, e.g. VMKEEP_VC_PASSWORD",
            ))
        vcenters[name] = VCenterConfig(
            name=name,
            url=str(vc.get("url", "")),
            username=str(vc.get("username", "")),
            password_env=vc.get("passwordEnv"),
            password_file=_resolve(base, vc["passwordFile"]) if vc.get("passwordFile") else None,
            ca_file=_resolve(base, vc["caFile"]) if vc.get("caFile") else None,
            thumbprint=vc.get("thumbprint"),
            insecure=vc.get("insecure") is True,
            transport=str(vc.get("transport") or "auto"),
            readers=str(vc.get("readers") or "process"),
        )
    secret_names = {vc.password_env for vc in vcenters.values() if vc.password_env}
    targets = {}
    for name, target in entries("targets"):
        chunk = target.get("chunkSize")
        if isinstance(chunk, int) and chunk & (chunk - 1) and ("targets", name, "chunkSize") \
                not in wrong:
            problems.append(doc.diagnostic(
                ("targets", name, "chunkSize"),
                f"`targets.{name}.chunkSize` must be a power of two",
                "e.g. 1048576 (1 MiB) or 4194304 (4 MiB)",
            ))
        targets[name] = TargetConfig(
            name=name,
            type=str(target.get("type", "directory")),
            path=_resolve(base, str(target.get("path", ""))),
            chunk_size=chunk if isinstance(chunk, int) else None,
            direct_writes=str(target.get("directWrites") or "auto"),
        )
    hooks = {}
    for name, hook in entries("hooks"):
        command = [str(arg) for arg in hook.get("command", []) if isinstance(arg, str)]
        if command and "/" in command[0]:
            command[0] = _resolve(base, command[0])
        env = hook.get("env")
        env = env if isinstance(env, dict) and ("hooks", name, "env") not in wrong else {}
        for key in env:
            if key in secret_names:
                problems.append(doc.diagnostic(
                    ("hooks", name, "env", key),
                    f"`hooks.{name}.env` must not set `{key}`: it holds a vCenter password "
                    "(`passwordEnv`)",
                    "hooks never get vCenter passwords; give the hook its own credentials",
                    key=True,
                ))
        hooks[name] = HookConfig(
            name=name,
            command=tuple(command),
            timeout_seconds=_timeout(doc, ("hooks", name, "timeout"), hook.get("timeout"),
                                     problems, wrong),
            env={k: v for k, v in env.items() if isinstance(v, str)
                 and ("hooks", name, "env", k) not in wrong},
        )
    defaults = Limits()
    limits = section("limits")

    def limit(key: str, default: int) -> int:
        value = limits.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    state = data.get("state")
    engine, proxies = engine_config.convert(doc, problems, wrong)
    return HostConfig(
        path=doc.path,
        vcenters=vcenters,
        targets=targets,
        state=_resolve(base, state if isinstance(state, str) and state else "vmkeep.db"),
        limits=Limits(
            max_deletes_per_run=limit("maxDeletesPerRun", defaults.max_deletes_per_run),
            concurrent_exports=limit("concurrentExports", defaults.concurrent_exports),
            concurrent_snapshots_per_host=limit(
                "concurrentSnapshotsPerHost", defaults.concurrent_snapshots_per_host
            ),
            concurrent_exports_per_datastore=limit(
                "concurrentExportsPerDatastore", defaults.concurrent_exports_per_datastore),
            verify_bytes_per_hour=limit("verifyBytesPerHour", defaults.verify_bytes_per_hour),
        ),
        hooks=hooks,
        engine=engine,
        proxies=proxies,
        policies=_policy_source(doc, section("policies"), problems, ("policies",) in wrong),
        hygiene=_hygiene(doc, section("hygiene"), problems, wrong),
    )


def _policy_source(
    doc: documents.Document, section: dict[str, Any], problems: list[Diagnostic], wrong: bool
) -> PolicySourceConfig | None:
    """`policies: {repo, rev, path}` (Git) or `policies: {path}` (a local directory)."""
    base = PurePath(doc.path).parent
    repo = section.get("repo") if isinstance(section.get("repo"), str) else None
    rev = section.get("rev") if isinstance(section.get("rev"), str) else None
    path = section.get("path") if isinstance(section.get("path"), str) else None
    if wrong or "policies" not in doc.data:
        return None
    if repo is None and rev is not None:
        problems.append(doc.diagnostic(("policies", "rev"), "`policies.rev` needs `repo`",
                                       "name the Git repository with `repo: URL`, or drop "
                                       "`rev` for a local directory (`path` alone)"))
        return None
    if repo is None and path is None:
        problems.append(doc.diagnostic(("policies",), "`policies` names no source",
                                       "give `repo: URL` (with `rev` and `path`) or "
                                       "`path: DIR` (a local directory)"))
        return None
    if repo is None:
        return PolicySourceConfig(path=posixpath.normpath(_resolve(base, path or ".")))
    if "://" not in repo and ":" not in repo.split("/", 1)[0]:
        # a local repository path, relative to this file
        repo = posixpath.normpath(_resolve(base, repo))
    return PolicySourceConfig(path="" if path in (None, "", ".") else str(path), repo=repo,
                              rev=rev)


def _hygiene(doc: documents.Document, section: dict[str, Any], problems: list[Diagnostic],
             wrong: set[documents.Where]) -> Hygiene:
    defaults = Hygiene()
    depth = section.get("chainDepth")
    age = section.get("snapshotMaxAge")
    seconds = defaults.snapshot_max_age_seconds
    if isinstance(age, str):
        seconds = _timeout(doc, ("hygiene", "snapshotMaxAge"), age, problems, wrong) or seconds
    return Hygiene(
        snapshot_max_age_seconds=seconds,
        chain_depth=depth if isinstance(depth, int) and not isinstance(depth, bool)
        and depth >= 1 else defaults.chain_depth,
    )
