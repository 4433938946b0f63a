"""`engine:` and `proxies:` of the host config (the scaled tier, docs/scale-out.md).

`convert(doc, problems, wrong)` turns the two sections the schema already checked into
`EngineConfig` and `ProxyConfig` values and adds what the schema cannot say, each at its
`file:line:column`: mutual TLS needs both a certificate and a key; one ESXi host, cluster or
datastore is claimed by one proxy queue only; a proxy queue is not the default queue.
`queue_for(vm, proxies, default)` is where a VM's actions go. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from reconciler import documents
from reconciler.errors import Diagnostic
from reconciler.model import VM, EngineConfig, EngineTLS, ProxyConfig

__all__ = ["DEFAULT_QUEUE", "convert", "queue_for"]

DEFAULT_QUEUE = "vmkeep"
_CLAIMS = ("hosts", "clusters", "datastores")


def convert(
    doc: documents.Document, problems: list[Diagnostic], wrong: set[documents.Where]
) -> tuple[EngineConfig | None, dict[str, ProxyConfig]]:
    data: dict[str, Any] = doc.data
    base = PurePath(doc.path).parent
    engine = _engine(doc, data.get("engine"), base, problems, wrong)
    default = engine.task_queue if engine else DEFAULT_QUEUE
    return engine, _proxies(doc, data.get("proxies"), default, problems, wrong)


def _engine(doc: documents.Document, section: Any, base: PurePath,
            problems: list[Diagnostic], wrong: set[documents.Where]) -> EngineConfig | None:
    if not isinstance(section, dict) or ("engine",) in wrong:
        return None

    def text(key: str, default: str) -> str:
        value = section.get(key)
        return value if isinstance(value, str) and ("engine", key) not in wrong else default

    tls = None
    raw_tls = section.get("tls")
    if isinstance(raw_tls, dict) and ("engine", "tls") not in wrong:
        if bool(raw_tls.get("certFile")) != bool(raw_tls.get("keyFile")):
            problems.append(doc.diagnostic(
                ("engine", "tls"), "`engine.tls`: mutual TLS needs both `certFile` and `keyFile`",
                "give both, or neither for server-verified TLS only",
            ))

        def path(key: str) -> str | None:
            value = raw_tls.get(key)
            if not isinstance(value, str) or not value:
                return None
            candidate = PurePath(value)
            return str(candidate if candidate.is_absolute() else base / candidate)

        server_name = raw_tls.get("serverName")
        tls = EngineTLS(path("caFile"), path("certFile"), path("keyFile"),
                        server_name if isinstance(server_name, str) else None)
    def number(key: str, default: int) -> int:
        value = section.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) \
            and value >= 1 else default

    return EngineConfig(
        address=text("address", ""),
        namespace=text("namespace", "default"),
        task_queue=text("taskQueue", DEFAULT_QUEUE),
        tls=tls,
        heartbeat_seconds=number("heartbeatSeconds", 60),
        attempts=number("attempts", 5),
    )


def _proxies(doc: documents.Document, section: Any, default: str,
             problems: list[Diagnostic], wrong: set[documents.Where]) -> dict[str, ProxyConfig]:
    if not isinstance(section, dict) or ("proxies",) in wrong:
        return {}
    proxies: dict[str, ProxyConfig] = {}
    claimed: dict[tuple[str, str], str] = {}
    for queue, entry in sorted(section.items()):
        if not isinstance(entry, dict) or ("proxies", queue) in wrong:
            continue
        if queue == default:
            problems.append(doc.diagnostic(
                ("proxies", queue),
                f"`proxies.{queue}`: {queue!r} is the default task queue",
                "name the proxy queue after its site, e.g. `site-a`",
            ))
        lists: dict[str, tuple[str, ...]] = {}
        for key in _CLAIMS:
            values = entry.get(key, [])
            if ("proxies", queue, key) in wrong or not isinstance(values, list):
                values = []
            lists[key] = tuple(str(v) for v in values if isinstance(v, str))
            for index, value in enumerate(lists[key]):
                other = claimed.setdefault((key, value), queue)
                if other != queue:
                    problems.append(doc.diagnostic(
                        ("proxies", queue, key, index),
                        f"`proxies.{queue}.{key}`: {value!r} is already served by proxy "
                        f"queue {other!r}",
                        "list it under one proxy queue only",
                    ))
        slots = entry.get("slots", 2)
        proxies[queue] = ProxyConfig(
            queue=queue,
            clusters=lists["clusters"],
            hosts=lists["hosts"],
            datastores=lists["datastores"],
            slots=slots if isinstance(slots, int) and not isinstance(slots, bool)
            and slots >= 1 else 2,
        )
    return proxies


def queue_for(vm: VM, proxies: Mapping[str, ProxyConfig],
              default: str = DEFAULT_QUEUE) -> str:
    """The task queue serving `vm`: the first proxy queue by name that lists its host, its
    cluster (`vm.cluster`, the host's compute resource) or a datastore of one of its disks;
    else `default`."""
    datastores = set(vm.datastores)
    for name in sorted(proxies):
        proxy = proxies[name]
        if (vm.host and vm.host in proxy.hosts) or (vm.cluster and vm.cluster in proxy.clusters) \
                or datastores & set(proxy.datastores):
            return name
    return default
