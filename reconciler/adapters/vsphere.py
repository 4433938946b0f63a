"""The vSphere adapter: talks SOAP to one vCenter. The only module that imports pyVmomi.

    with VSphereClient(config, password) as client:
        inventory = client.inventory()

How it talks:

* **TLS** is verified with an explicit context (`vsphere_tls`): caFile or the system CAs,
  or a pinned thumbprint; ``insecure: true`` turns it off, with a warning. The API version
  is negotiated from ``/sdk/vimServiceVersions.xml`` before any credential is sent.
* **Every call** goes through `VSphereClient.call`: it logs in when needed, logs in again
  when the session was lost (``NotAuthenticated``; an expired session can also show up as a
  result whose properties are all in ``missingSet``, or as a vanished ContainerView) and
  retries transient failures (connection refused/reset, server disconnects, HTTP
  502/503/504, timeouts) with bounded exponential backoff (`retry`). A mutation is called
  with ``retry=False``: logging in again after the server refused it for want of a session
  is safe (nothing was done), repeating a request that may have been carried out is not.
  Managed object references are built through `VSphereClient.ref`/`stub`/`content`, which
  open the session when none is open: every operation works as the first call on a client.
  Operations use the client's public surface only (`call`, `sleep`, `endpoint`,
  `connection`, `stub`, `content`, `ref`, `retrieve` for a paged property read).
* **Errors** come out as `AuthenticationError` (naming the vCenter and user, never the
  password), `CertificateError` (with what the server presented and what to set),
  `TransientError` (after the retries) or `VCenterError`; a fault's class name is kept in
  `VCenterError.fault`, and callers decide on it (``exc.fault in {...}``), never on text.
* **The inventory** is one paged PropertyCollector read over a ContainerView
  (RetrievePropertiesEx, then ContinueRetrievePropertiesEx per page) asking only for the
  properties `vsphere_inventory` lists; conversion to model values happens there, purely.
  Pages are read from their SOAP bytes by `vsphere_fast` (7-8x faster than pyVmomi's
  deserialiser at 10,000 VMs), the next page asked for while one is parsed; requests and
  faults still go through pyVmomi. `fast_inventory=False` reads pages with pyVmomi.
  Tags come from the REST tagging API (`vsphere_tags`) when the vCenter serves it.
* **The watch cache** (`VSphereWatch`, the controller's observe) keeps that inventory with
  WaitForUpdatesEx on a filter over the same spec: a full read at start and after a session
  loss, then only changes; tags are read again each tick (docs/controller.md).
* **Disk data** of a snapshot is read per disk by the transport `model.choose_transport`
  picks: over the datastore HTTP interface (`datastore`, resumable Range reads) where the
  disk is a file (VMFS, NFS), through the snapshot's NFC export lease (`ExportSnapshot`,
  `nfc`) where it is not (vSAN, VVol, or the datastore refused the read), through `ExportVm`
  when the VM is powered off; the host config's `transport` forces one. Changed block
  tracking (`QueryChangedDiskAreas`) narrows an HTTP export to the extents changed since the
  previous point's `changeId`.

A client is meant for one thread at a time; use one client per worker thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import io
import logging
import os
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import pairwise
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyVmomi import SoapStubAdapter, vim, vmodl
from pyVmomi.SoapAdapter import SoapResponseDeserializer
from pyVmomi.VmomiSupport import GetServiceVersions, versionIdMap

from reconciler.adapters.datastore import (
    DatastoreFile,
    PositionedReader,
    RangeReader,
    ZeroExtended,
    flat_extent,
    parse_datastore_path,
)
from reconciler.adapters.nfc import (
    LeasedStream,
    NfcDevice,
    Transported,
    device_for,
    download_file,
    open_disk_download,
    progress_interval,
)
from reconciler.adapters.reader_process import ProcessRangeReader, ReaderPool, ReaderProcess
from reconciler.adapters.retry import RetryPolicy, call_with_retries
from reconciler.adapters.vmdk_stream import StreamStats, stream_optimized
from reconciler.adapters.vsphere_fast import (
    Missing,
    ObjectUpdate,
    Page,
    UpdateSet,
    parse_page,
    parse_updates,
    token_of,
)
from reconciler.adapters.vsphere_inventory import (
    COMPUTE_KINDS,
    COMPUTE_PROPERTIES,
    CONTAINER_PROPERTIES,
    DATASTORE_PROPERTIES,
    HOST_PROPERTIES,
    VM_PROPERTIES,
    RawObject,
    build_inventory,
    disk_slots,
    disks_of,
)
from reconciler.adapters.vsphere_tags import TagsUnavailable, read_vm_tags
from reconciler.adapters.vsphere_tls import (
    FingerprintMismatch,
    certificate_hint,
    endpoint_of,
    pin_of,
    pinned_connection,
    ssl_context,
)
from reconciler.collector import collector_paused
from reconciler.errors import (
    AuthenticationError,
    CertificateError,
    TransientError,
    VCenterError,
    VmkeepError,
)
from reconciler.model import (
    VM,
    Disk,
    DiskTransport,
    HostConfig,
    Inventory,
    TransportUnavailable,
    VCenterConfig,
    after_refusal,
    choose_transport,
)
from reconciler.ports import (
    BuildSpec,
    CreatedVM,
    DatastoreSpace,
    DiskStream,
    ExistingVM,
    Placement,
    RestoreSurvey,
    VCenterOps,
)
from reconciler.vmconfig import (
    CONFIG_FILE,
    ControllerSpec,
    DiskSpec,
    NicSpec,
    VMConfig,
    hardware_number,
)

__all__ = ["VCenterPool", "VSphereClient", "VSphereOperations", "VSphereRestore"]

log = logging.getLogger(__name__)

#: Seconds to connect (TCP and TLS) and to wait for an answer, for every connection a client
#: makes, and the disk reader processes of its pool.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0

T = TypeVar("T")
R = TypeVar("R")

#: Used when the server does not say which API versions it speaks (vSphere 6.5).
FALLBACK_VERSION = "vim.version.version11"
#: How often one attempt may log in again because its session ended under it.
MAX_RELOGINS = 2
PC = vmodl.query.PropertyCollector


def _inventory_kinds() -> list[Any]:
    """The managed object types an inventory reads (the full read and the watch alike)."""
    return [vim.VirtualMachine, vim.Folder, vim.Datacenter, vim.VirtualApp, vim.HostSystem,
            vim.Datastore, vim.ComputeResource]


class _Pending(Enum):
    """What a poll's judge returns while the awaited state is not reached yet."""

    PENDING = "pending"


class _SessionLost(Exception):
    """The session ended (expired, terminated, server restarted): log in again."""


class VSphereClient:
    """A connection to one vCenter; implements the `InventorySource` port."""

    def __init__(
        self,
        config: VCenterConfig,
        password: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        page_size: int = 1000,
        tags: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        fast_inventory: bool = True,
        readers: ReaderPool | None = None,
    ) -> None:
        self.config = config
        self._password = password
        #: Where the vCenter is (host, port, SDK path), from its url.
        self.endpoint = endpoint_of(config)
        self._connection = pinned_connection(
            ssl_context(config),
            pin_of(config),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._policy = RetryPolicy(attempts=retries + 1, base_delay=backoff)
        self._page_size = page_size
        self._tags = tags
        #: How the client (and what runs on its session) waits; tests pass a recorder.
        self.sleep = sleep
        #: Read inventory pages from their SOAP bytes (`vsphere_fast`), not through pyVmomi.
        self.fast_inventory = fast_inventory
        #: Helper processes that read disk data (`readers: process`): a `VCenterPool`'s,
        #: shared by its threads, or this client's own (made on first use).
        self._readers = readers
        self._own_readers: ReaderPool | None = None
        self._timeouts = (connect_timeout, read_timeout)
        self._stub: Any = None
        self._content: Any = None
        self._logged_in = False

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------ session

    @property
    def stub(self) -> Any:
        """The SOAP stub of a live session: the session is opened (logged in, with retries)
        when none is, so a reference built from it works as the first call on a fresh
        client. Build references inside the operation given to `call`, so a retry after a
        new login uses the current stub."""
        if self._stub is None or not self._logged_in:
            self.call("log in", lambda: None)
        return self._stub

    @property
    def content(self) -> Any:
        """The ServiceContent of a live session (opened on first use, like `stub`)."""
        if self._stub is None or not self._logged_in:
            self.call("log in", lambda: None)
        return self._content

    def ref(self, kind: Any, moref: str) -> Any:
        """A managed object reference on the live session's stub, e.g.
        ``ref(vim.vm.Snapshot, "snapshot-12")``."""
        return kind(moref, self.stub)

    def connection(self, host: str, port: int) -> http.client.HTTPConnection:
        """A new HTTPS connection to `host` (the vCenter or one of its ESXi hosts), verified
        as the vCenter's TLS settings say."""
        return self._connection(host, port)

    def reader_process(self) -> ReaderProcess | None:
        """A running disk reader process reserved for one reader (`readers: process`, the
        default). None — the caller reads in its own thread — with `readers: thread`,
        without Linux's `memfd_create`, and once one could not be started (the pool warns
        once)."""
        if not _reads_in_processes(self.config):
            return None
        pool = self._readers
        if pool is None:
            if self._own_readers is None:
                self._own_readers = ReaderPool(self.config,
                                               connect_timeout=self._timeouts[0],
                                               read_timeout=self._timeouts[1])
            pool = self._own_readers
        return pool.take()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> VSphereClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Log out (best effort) and close the connections. The client can be used again."""
        readers, self._own_readers = self._own_readers, None
        if readers is not None:
            readers.close()
        if self._stub is None:
            return
        if self._logged_in:
            try:
                self._content.sessionManager.Logout()
            except Exception as exc:  # closing must not fail: the session expires anyway
                log.debug("vCenter %r: logout failed: %s", self.name, exc)
        self._stub.DropConnections()
        self._stub = self._content = None
        self._logged_in = False

    # ------------------------------------------------------------------ inventory

    def inventory(self) -> Inventory:
        """Every VM with disks, snapshot tree, attributes and (where available) tags."""
        # The fast reader pauses the cyclic collector (pyVmomi's reader is left as it was).
        with collector_paused() if self.fast_inventory else contextlib.nullcontext():
            objects, fields = self.call("read the inventory", self._read_inventory)
            tags = self._read_tags()
            inventory, skipped = build_inventory(self.name, objects, fields, tags)
        for reason in skipped:
            log.warning("vCenter %r: VM left out of the inventory: %s", self.name, reason)
        return inventory

    def _read_inventory(self) -> tuple[list[RawObject], list[Any]]:
        content = self._content
        view = content.viewManager.CreateContainerView(
            container=content.rootFolder, type=_inventory_kinds(), recursive=True)
        try:
            objects, fields = self.retrieve(self._inventory_spec(view), view)
        except vmodl.fault.ManagedObjectNotFound as exc:
            if getattr(exc.obj, "_moId", None) == view._moId:
                raise _SessionLost("the ContainerView vanished with its session") from exc
            raise
        finally:
            try:
                view.DestroyView()
            except Exception as exc:  # the view dies with the session anyway
                log.debug("vCenter %r: DestroyView failed: %s", self.name, exc)
        # The root folder is read as a canary: every session can read it, so its absence
        # means the session ended (the view's contents then silently vanish).
        root = content.rootFolder._moId
        if not any(obj.id == root and obj.props for obj in objects):
            raise _SessionLost("the root folder was not readable")
        return [obj for obj in objects if obj.id != root], fields

    def _inventory_spec(self, view: Any) -> Any:
        types = {
            "VirtualMachine": VM_PROPERTIES,
            **CONTAINER_PROPERTIES,
            "HostSystem": HOST_PROPERTIES,
            "Datastore": DATASTORE_PROPERTIES,
            **dict.fromkeys(COMPUTE_KINDS, COMPUTE_PROPERTIES),
        }
        prop_set = [
            PC.PropertySpec(type=getattr(vim, kind), pathSet=list(paths), all=False)
            for kind, paths in types.items()
        ]
        object_set = [
            PC.ObjectSpec(obj=self._content.rootFolder, skip=False),
            PC.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    PC.TraversalSpec(
                        name="traverseView", type=vim.view.ContainerView, path="view", skip=False
                    )
                ],
            )
        ]
        fields_manager = self._content.customFieldsManager
        if fields_manager is not None:  # ESXi has none
            object_set.append(PC.ObjectSpec(obj=fields_manager, skip=False))
            prop_set.append(PC.PropertySpec(type=vim.CustomFieldsManager, pathSet=["field"]))
        # Report a vanished view as missing rather than failing the whole call.
        return PC.FilterSpec(
            objectSet=object_set, propSet=prop_set, reportMissingObjectsInResults=True
        )

    def retrieve(self, spec: Any, view: Any, *, fast: bool | None = None
                  ) -> tuple[list[RawObject], list[Any]]:
        """One RetrievePropertiesEx and its continuation pages.

        `fast` (default: `fast_inventory`): parse the pages without pyVmomi; references in
        the properties are then `vsphere_fast.Ref`s, which pyVmomi calls do not take — callers
        that pass properties on to pyVmomi ask for `fast=False`.
        The fast reader asks for the next page before it parses the current one (the token
        comes first in an answer), so the vCenter prepares a page while this one is parsed.
        """
        collector = self._content.propertyCollector
        objects: list[RawObject] = []
        fields: list[Any] = []
        first = [[spec], PC.RetrieveOptions(maxObjects=self._page_size)]
        token = None
        ahead: concurrent.futures.Future[bytes] | None = None
        body: bytes | None = None
        page: Page | None = None
        fast = self.fast_inventory if fast is None else fast
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                if fast:
                    body = self._fetch_page(collector, "RetrievePropertiesEx", first)
                else:
                    page = self._pyvmomi_page(collector, "RetrievePropertiesEx", first)
                while True:
                    if body is not None:
                        token = token_of(body)
                        if token:
                            ahead = pool.submit(
                                self._fetch_page, collector, "ContinueRetrievePropertiesEx",
                                [token])
                        try:
                            page = parse_page(body)
                        except ElementTree.ParseError as exc:
                            raise VCenterError(
                                self.name, f"read the inventory: an answer is not well-formed "
                                f"XML ({exc})") from None
                        body = None
                    if page is None:
                        break
                    token = page.token
                    for missing in page.missing:
                        self._check_missing(missing, view._moId)
                    for obj in page.objects:
                        if obj.kind == "CustomFieldsManager":
                            fields = list(obj.props.get("field") or [])
                        else:
                            objects.append(obj)
                    if not token:
                        break
                    more = "ContinueRetrievePropertiesEx"
                    if ahead is not None:
                        body, ahead = ahead.result(), None
                    elif fast:
                        body = self._fetch_page(collector, more, [token])
                    else:
                        page = self._pyvmomi_page(collector, more, [token])
                token = None
            except _SessionLost:
                token = None  # the token died with the session
                raise
            finally:
                if ahead is not None:  # a page asked for ahead: its token is the live one
                    token = None
                    try:
                        token = token_of(ahead.result())
                    except Exception as exc:
                        log.debug("vCenter %r: page read ahead failed: %s", self.name, exc)
                if token:  # stopped half-way for another reason than a lost session
                    try:
                        collector.CancelRetrievePropertiesEx(token=token)
                    except Exception as exc:
                        log.debug("vCenter %r: CancelRetrievePropertiesEx failed: %s",
                                  self.name, exc)
        return objects, fields

    def _pyvmomi_page(self, collector: Any, method: str, args: list[Any]) -> Page | None:
        """A page as pyVmomi reads it (the reference the fast reader is tested against)."""
        result = getattr(collector, method)(*args)
        if result is None:
            return None
        page = Page(token=result.token)
        for content in result.objects:
            obj = content.obj
            page.objects.append(
                RawObject(obj._wsdlName, obj._moId, {p.name: p.val for p in content.propSet or ()})
            )
            page.missing.extend(
                Missing(obj._wsdlName, obj._moId, m.path, _short_type(m.fault))
                for m in content.missingSet or ()
            )
        return page

    def _fetch_page(self, collector: Any, method: str, args: list[Any]) -> bytes:
        """The SOAP answer's bytes, for `vsphere_fast`; faults still come through pyVmomi."""
        stub = self._stub
        info = collector._GetMethodInfo(method)
        request = stub.SerializeRequest(collector, info, args)
        headers = {
            "Cookie": stub.cookie,
            "SOAPAction": stub.versionId,
            "Content-Type": "text/xml; charset=UTF-8",
        }
        conn = stub.GetConnection()
        try:
            conn.request("POST", stub.path, request, headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            stub.DropConnections()
            raise
        if response.status == 200:
            stub.ReturnConnection(conn)
            return bytes(body)
        if response.status == 500:
            stub.ReturnConnection(conn)
            fault = SoapResponseDeserializer(stub).Deserialize(io.BytesIO(body), info.result)
            raise fault
        conn.close()
        raise http.client.HTTPException(f"{response.status} {response.reason}")

    def _check_missing(self, missing: Missing, view_id: str) -> None:
        if missing.fault == "NotAuthenticated":
            # An expired session: no exception, every property reported missing.
            raise _SessionLost(f"{missing.id}: {missing.path} not readable without a session")
        if missing.id == view_id:
            raise _SessionLost(f"the ContainerView is gone: {missing.fault}")
        log.warning(
            "vCenter %r: %s %s: property %s not read: %s",
            self.name, missing.kind, missing.id, missing.path, missing.fault,
        )

    def _read_tags(self) -> dict[str, tuple[str, ...]] | None:
        """VM tags, or None when the tagging API is not served, refused or keeps failing."""
        if not self._tags:
            return None
        host, port = self.endpoint.host, self.endpoint.port

        def read() -> dict[str, tuple[str, ...]] | None:
            try:
                return read_vm_tags(
                    lambda: self._connection(host, port), self.config.username, self._password
                )
            except TagsUnavailable as exc:
                log.info("vCenter %r: tags not available: %s", self.name, exc)
                return None

        try:
            return call_with_retries(
                lambda: self._translated("read tags", read), self._policy, sleep=self.sleep
            )
        except VCenterError as exc:
            if not exc.transient:
                raise
            log.warning("vCenter %r: tags not read, %s", self.name, exc)
            return None

    # ------------------------------------------------------------------ calls

    def call(self, what: str, operation: Callable[[], T], *, retry: bool = True) -> T:
        """Run SOAP calls (`operation`) with a live session; `what` names them in errors.

        A lost session is opened again and `operation` run again (a request refused for
        want of a session did nothing). With `retry` (idempotent reads) transient failures
        are retried with backoff; without (mutations: the request may have been carried out)
        they are raised at once and the caller retries the whole action, reading first.
        """

        def attempt() -> T:
            for _ in range(MAX_RELOGINS + 1):
                try:
                    self._ensure_session()
                    return operation()
                except (_SessionLost, vim.fault.NotAuthenticated) as exc:
                    log.info("vCenter %r: session lost (%s); logging in again", self.name, exc)
                    self._logged_in = False
            raise TransientError(
                self.name, f"{what}: the session ended {MAX_RELOGINS + 1} times in a row", 0.0
            )

        if not retry:
            return self._translated(what, attempt)
        return call_with_retries(
            lambda: self._translated(what, attempt), self._policy, sleep=self.sleep
        )

    def _ensure_session(self) -> None:
        if self._stub is None:
            stub: Any = SoapStubAdapter(
                host=self.endpoint.host,
                port=self.endpoint.port,
                path=self.endpoint.path,
                version=self._api_version(),
            )
            stub.scheme = self._connection  # every connection verifies as configured
            stub.schemeArgs = {}
            self._content = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
            self._stub = stub
        if not self._logged_in:
            self._stub.SetSessionId(None)  # do not present the old session's cookie
            self._content.sessionManager.Login(
                userName=self.config.username, password=self._password
            )
            self._logged_in = True

    def _api_version(self) -> str:
        """The newest API version both pyVmomi and the server know."""
        conn = self._connection(self.endpoint.host, self.endpoint.port)
        try:
            conn.request("GET", f"{self.endpoint.path}/vimServiceVersions.xml")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status >= 500:
            raise http.client.HTTPException(f"{response.status} {response.reason}")
        supported: set[str] = set()
        if response.status == 200:
            try:
                root = ElementTree.fromstring(body)
                for namespace in root.iter("namespace"):
                    if namespace.findtext("name") == "urn:vim25":
                        supported.update(v.text or "" for v in namespace.iter("version"))
            except ElementTree.ParseError:
                pass
        for version in GetServiceVersions("vim25"):
            if versionIdMap.get(version) in supported:
                return str(version)
        log.debug("vCenter %r: no common API version found, using %s", self.name,
                  FALLBACK_VERSION)
        return FALLBACK_VERSION

    def _translated(self, what: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except VmkeepError:
            raise
        except Exception as exc:
            error = self._translate(what, exc)
            if error is None:
                raise
            if error.transient:
                self._drop_connections()
            raise error from exc

    def _drop_connections(self) -> None:
        if self._stub is not None:
            self._stub.DropConnections()

    def _translate(self, what: str, exc: Exception) -> VmkeepError | None:
        """The VmkeepError for a failure, or None for a bug that should surface as is."""
        name, endpoint = self.name, self.endpoint
        if isinstance(exc, vim.fault.InvalidLogin):
            source = (
                f" (the password comes from ${self.config.password_env})"
                if self.config.password_env
                else f" (the password comes from {self.config.password_file})"
                if self.config.password_file
                else ""
            )
            return AuthenticationError(
                name,
                f"login as {self.config.username!r} at {endpoint.netloc} was refused: wrong "
                f"user name or password{source}",
                fault="InvalidLogin",
            )
        if isinstance(exc, ssl.SSLCertVerificationError | FingerprintMismatch):
            return CertificateError(name, certificate_hint(self.config, endpoint, exc))
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return TransientError(name, f"{what}: TLS connection closed: {exc}", 0.0)
        if isinstance(exc, ssl.SSLError):
            return VCenterError(name, f"{what}: TLS handshake with {endpoint.netloc} failed: {exc}")
        if isinstance(exc, socket.gaierror):
            return VCenterError(name, f"cannot resolve {endpoint.host!r}: {exc.strerror}")
        if isinstance(exc, OSError | http.client.IncompleteRead | http.client.BadStatusLine):
            return TransientError(name, f"{what}: {_describe(exc)} ({endpoint.netloc})", 0.0)
        if isinstance(exc, http.client.HTTPException):
            text = str(exc)
            if text[:3] in {"502", "503", "504"}:
                return TransientError(name, f"{what}: HTTP {text} from {endpoint.netloc}", 0.0)
            return VCenterError(
                name, f"{what}: HTTP {text} from {endpoint.netloc} (is the url's path right?)"
            )
        if isinstance(exc, vmodl.MethodFault):
            return fault_error(name, what, exc)
        return None


def _short_type(value: Any) -> str:
    """A pyVmomi value's type without its namespace: `vim.fault.InvalidState` →
    `InvalidState`, `vim.vm.device.ParaVirtualSCSIController` → `ParaVirtualSCSIController`."""
    return type(value).__name__.rsplit(".", 1)[-1]


def fault_error(vcenter: str, what: str, fault: Any) -> VCenterError:
    """The error for a vim/vmodl fault (raised by a call, or a task's or lease's `error`):
    the fault's class name in `fault` and the message; busy faults are transient (refused,
    nothing done: the object was busy)."""
    name = _short_type(fault) if fault is not None else None
    message = getattr(fault, "msg", "") or getattr(fault, "localizedMessage", "") or ""
    text = f"{what}: {name or 'unknown fault'}{': ' + message if message else ''}"
    if name in BUSY_FAULTS:
        return TransientError(vcenter, text, 2.0, fault=name)
    return VCenterError(vcenter, text, fault=name)


def _refused(exc: VCenterError) -> bool:
    """A datastore HTTP read the datastore refused (no such file, forbidden): what vSAN and
    VVol answer for a disk's flat file."""
    return exc.http_status in (403, 404)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------- operations
#
# What `vmkeep apply` does to a vCenter (the `VCenterOps` port). Reads go through
# `client.call` (re-login and retries); mutations through `_mutate` (``retry=False``), which
# logs in again when the server refused the request for want of a session (it did nothing
# then) but never repeats a request that may have been carried out: a transient failure there
# surfaces as `TransientError`, and the executor retries the whole action, which re-reads
# reality first.

#: Task faults worth retrying (the object was busy), by pyVmomi class name.
BUSY_FAULTS = frozenset({"TaskInProgress", "ConcurrentAccess", "ResourceInUse"})
#: Faults of HttpNfcLeaseAbort on a lease that already ended (or is gone).
LEASE_ENDED_FAULTS = frozenset({"ManagedObjectNotFound", "InvalidState", "Timedout"})
#: Faults saying a file or object is not there.
NOT_FOUND_FAULTS = frozenset({"FileNotFound", "NotFound", "ManagedObjectNotFound"})
#: Seconds between task state polls (growing up to the maximum).
TASK_POLL = (0.05, 1.0)
#: How long an NFC export lease may take to become ready.
LEASE_READY_TIMEOUT = 300.0


def _parent_of(obj: RawObject) -> Any:
    """The container above an object in the inventory's folder path (None at the root)."""
    props = obj.props
    return props.get("parent") or props.get("parentVApp") or props.get("parentFolder")


def _still_linked(obj: RawObject, above: list[Any],
                  read: Mapping[tuple[str, str], RawObject]) -> list[RawObject] | None:
    """The chain above `obj` (the containers remembered above it, as `read` holds them now)
    when each is still there and each one's parent is still the next one, as walking up
    would have found them; else None."""
    found = [read.get(_id(r)) for r in above]
    nodes = [o for o in found if o is not None]
    if len(nodes) != len(found):
        return None  # one of them is gone
    for below, up in pairwise([obj, *nodes]):
        parent = _parent_of(below)
        if parent is None or _id(parent) != (up.kind, up.id):
            return None
    top = _parent_of(nodes[-1])
    if top is not None and top._wsdlName in CONTAINER_PROPERTIES:
        return None  # the walk would not have ended there
    # the root folder (no parent) ends the walk but is not part of the path
    return [o for o in nodes if _parent_of(o) is not None]


@dataclass
class Remembered:
    """Where a vCenter's objects were found by earlier reads, by "kind:moref" (`_key`): the
    next read asks for what it expects in the same call and checks every link, so this only
    saves calls, it never decides what is read.

    * `chains`: a folder or vApp → it and the containers above it, up to the root folder;
    * `parents`: a VM → the folder or vApp it was in;
    * `placements`: a VM → its host and the host's compute resource (cluster);
    * `computes`: a host → its compute resource.
    """

    chains: dict[str, list[Any]] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    placements: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    computes: dict[str, Any] = field(default_factory=dict)


def _key(ref: Any) -> str:
    return f"{ref._wsdlName}:{ref._moId}"


def _id(ref: Any) -> tuple[str, str]:
    """How a reference's object is named in `RawObject`s: (kind, id)."""
    return ref._wsdlName, ref._moId


def _by_id(objects: list[RawObject]) -> dict[tuple[str, str], RawObject]:
    return {(o.kind, o.id): o for o in objects}


def _props_of(read: Mapping[tuple[str, str], RawObject], ref: Any) -> Mapping[str, Any]:
    obj = read.get(_id(ref))
    return obj.props if obj is not None else {}


def _still_placed(host: Any, placed: tuple[Any, ...],
                  read: Mapping[tuple[str, str], RawObject]) -> list[RawObject] | None:
    """The VM's host and its compute resource, as read with the VM, when the VM still runs on
    the host it ran on (`placed`: the host, then its compute resource) and the host is still
    in that compute resource; else None (they are read again)."""
    if host is None or len(placed) != 2 or _id(host) != _id(placed[0]):
        return None
    on, compute = (read.get(_id(r)) for r in placed)
    parent = on.props.get("parent") if on is not None else None
    if on is None or compute is None or parent is None or _id(parent) != (compute.kind,
                                                                         compute.id):
        return None
    return [on, compute]


class VSphereOperations:
    """The `VCenterOps` port on top of one `VSphereClient` (one thread at a time)."""

    def __init__(self, client: VSphereClient, *, task_timeout: float = 3600.0,
                 remembered: Remembered | None = None) -> None:
        self.client = client
        self.name = client.name
        self._task_timeout = task_timeout
        self._datastore_types: dict[str, str] = {}  # summary.type by datastore name
        #: Where objects were found last time (`Remembered`; a `VCenterPool` shares one
        #: between its threads): asked for again in one call and checked, not trusted.
        self._seen = Remembered() if remembered is None else remembered

    # ------------------------------------------------------------------ reading a VM

    def find_vm(self, instance_uuid: str) -> VM | None:
        c = self.client

        def read() -> VM | None:
            ref = c.content.searchIndex.FindByUuid(
                uuid=instance_uuid, vmSearch=True, instanceUuid=True
            )
            if ref is None:
                return None
            # with the VM, in the same call: the custom attributes' names, and its host and
            # cluster of the last read (used while the VM is still on that host)
            placed = self._seen.placements.get(_key(ref), ())
            manager = c.content.customFieldsManager
            also = [(r, HOST_PROPERTIES if r._wsdlName == "HostSystem" else COMPUTE_PROPERTIES)
                    for r in placed]
            also += [(manager, ("field",))] if manager is not None else []
            vm, chain, extra = self._with_chain(ref, VM_PROPERTIES, also)
            fields = _props_of(extra, manager).get("field") or [] if manager is not None else []
            host = vm.props.get("runtime.host")
            hosts = _still_placed(host, placed, extra)
            if hosts is None:
                hosts = self._host_and_compute(host) if host is not None else []
                self._seen.placements[_key(ref)] = tuple(
                    self.client.ref(getattr(vim, o.kind), o.id) for o in hosts)
            inventory, _ = build_inventory(self.name, [vm, *chain, *hosts], fields, None)
            return inventory.vms[0] if inventory.vms else None

        return c.call(f"read VM {instance_uuid}", read)

    def _read_objects(self, refs: list[Any], paths: tuple[str, ...]) -> list[RawObject]:
        return self._retrieve(refs, {type(refs[0]): paths})

    def _retrieve(self, refs: list[Any], paths: Mapping[Any, tuple[str, ...]]
                  ) -> list[RawObject]:
        """The objects `refs` (those that still exist) with the properties `paths` gives
        for their type, in one call (continued while the answer is paged)."""
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=r, skip=False) for r in refs],
            propSet=[PC.PropertySpec(type=kind, pathSet=list(names), all=False)
                     for kind, names in paths.items()],
        )
        result = self.client.content.propertyCollector.RetrievePropertiesEx(
            specSet=[spec], options=PC.RetrieveOptions()
        )
        objects: list[RawObject] = []
        while result is not None:
            for content in result.objects:
                for missing in content.missingSet or ():
                    if isinstance(missing.fault, vim.fault.NotAuthenticated):
                        raise _SessionLost("properties missing: the session ended")
                objects.append(RawObject(content.obj._wsdlName, content.obj._moId,
                                         {p.name: p.val for p in content.propSet or ()}))
            if not result.token:
                break
            result = self.client.content.propertyCollector.ContinueRetrievePropertiesEx(
                token=result.token
            )
        return objects

    def _host_and_compute(self, host: Any) -> list[RawObject]:
        """A host and its cluster (or standalone compute resource): in one call when the
        host's compute resource is known from another VM's read and still is its parent."""
        compute = self._seen.computes.get(_key(host))
        if compute is not None:
            read = _by_id(self._retrieve(
                [host, compute], {type(host): HOST_PROPERTIES, type(compute): COMPUTE_PROPERTIES}))
            found = _still_placed(host, (host, compute), read)
            if found is not None:
                return found
        hosts = self._read_objects([host], HOST_PROPERTIES)
        computes = [ref for h in hosts if (ref := h.props.get("parent")) is not None]
        hosts += self._read_objects(computes, COMPUTE_PROPERTIES) if computes else []
        if computes:
            self._seen.computes[_key(host)] = computes[0]
        return hosts

    def _with_chain(self, ref: Any, paths: tuple[str, ...],
                    also: Sequence[tuple[Any, tuple[str, ...]]] = ()
                    ) -> tuple[RawObject, list[RawObject], dict[tuple[str, str], RawObject]]:
        """An object (a VM: `paths` include its `parent` and `parentVApp`) and the folders,
        vApps and datacenter above it, nearest first, all read now; and the objects `also`
        names (each with its properties) as read in the first call, by kind and id.

        The containers found above it last time are asked for in the same call as the
        object, and used when the object's parent is still the first of them and each
        one's parent the next; otherwise (something was moved, renamed objects are fine)
        they are found by walking up, one call per level, and remembered."""
        seen = self._seen
        above = seen.parents.get(_key(ref))
        known = seen.chains.get(above, []) if above is not None else []
        kinds: dict[Any, tuple[str, ...]] = {type(ref): paths}
        for node in known:
            kinds[type(node)] = CONTAINER_PROPERTIES[node._wsdlName]
        for other, names in also:
            kinds[type(other)] = names
        read = _by_id(self._retrieve([ref, *known, *(r for r, _ in also)], kinds))
        obj = read.get(_id(ref))
        if obj is not None and known:
            linked = _still_linked(obj, known, read)
            if linked is not None:
                return obj, linked, read
        if obj is None:  # gone since it was found: as a read of it alone would fail
            [obj] = self._read_objects([ref], paths)
        parent = _parent_of(obj)
        if parent is None or parent._wsdlName not in CONTAINER_PROPERTIES:
            return obj, [], read
        seen.parents[_key(ref)] = _key(parent)
        others = seen.chains.get(_key(parent))  # found above another object in that folder
        if others and others != known:
            linked = _still_linked(obj, others, _by_id(self._retrieve(
                others, {type(n): CONTAINER_PROPERTIES[n._wsdlName] for n in others})))
            if linked is not None:
                return obj, linked, read
        chain, walked = self._walk_up(parent)
        seen.chains[_key(parent)] = walked
        return obj, chain, read

    def _walk_up(self, ref: Any) -> tuple[list[RawObject], list[Any]]:
        """Folders, vApps and the datacenter above an object, nearest first, one call per
        level; and every container read on the way (the root folder too)."""
        chain: list[RawObject] = []
        walked: list[Any] = []
        while ref is not None and len(chain) < 64:
            kind = ref._wsdlName
            if kind not in CONTAINER_PROPERTIES:
                break
            [obj] = self._read_objects([ref], CONTAINER_PROPERTIES[kind])
            walked.append(ref)
            ref = _parent_of(obj)
            if ref is None:
                break  # the root folder is not part of inventory paths
            chain.append(obj)
        return chain, walked

    def _datacenter_of(self, vm: VM) -> str:
        def read() -> str:
            _, chain, _ = self._with_chain(self._vm_ref(vm), ("parent", "parentVApp"))
            for node in chain:
                if node.kind == "Datacenter":
                    return str(node.props.get("name"))
            raise VCenterError(self.name, f"VM {vm.name!r} is in no datacenter")

        return self.client.call(f"find the datacenter of VM {vm.name!r}", read)

    def _vm_ref(self, vm: VM) -> Any:
        return self.client.ref(vim.VirtualMachine, vm.moref)

    def _snapshot_ref(self, snapshot_id: str) -> Any:
        return self.client.ref(vim.vm.Snapshot, snapshot_id)

    # ------------------------------------------------------------------ mutations

    def _mutate(self, what: str, operation: Callable[[], T]) -> T:
        """A mutating call: sent once (see `VSphereClient.call`)."""
        return self.client.call(what, operation, retry=False)

    def _poll(self, what: str, read: Callable[[], R], judge: Callable[[R], T | _Pending],
              timeout: float, late: Callable[[R], str]) -> T:
        """Read (`client.call(what, read)`) until `judge` says done, waiting ever longer
        (`TASK_POLL`) between reads: what `judge` returns, or raises; after `timeout` seconds
        a `VCenterError` saying `late(last read)`."""
        deadline = time.monotonic() + timeout
        delay = TASK_POLL[0]
        while True:
            seen = self.client.call(what, read)
            done = judge(seen)
            if done is not _Pending.PENDING:
                return done
            if time.monotonic() > deadline:
                raise VCenterError(self.name, late(seen))
            self.client.sleep(delay)
            delay = min(TASK_POLL[1], delay * 2)

    def _run_task(self, what: str, start: Callable[[], Any]) -> Any:
        """Start a task (once) and wait for it; its fault becomes a `VCenterError`."""
        task = self._mutate(what, start)

        def judge(props: Mapping[str, Any]) -> Any:
            state = props.get("info.state")
            if state == "success":
                return props.get("info.result")
            if state == "error":
                raise fault_error(self.name, what, props.get("info.error"))
            return _Pending.PENDING

        return self._poll(
            f"{what}: wait for task",
            lambda: self._read_props(task, ("info.state", "info.error", "info.result")),
            judge, self._task_timeout,
            lambda props: f"{what}: task {task._moId} still {props.get('info.state')} after "
                          f"{self._task_timeout:.0f} s")

    def _read_props(self, ref: Any, paths: tuple[str, ...]) -> Mapping[str, Any]:
        [obj] = self._read_objects([ref], paths)
        return obj.props

    def _read_one(self, what: str, ref: Any, paths: tuple[str, ...]) -> Mapping[str, Any]:
        """One object's properties as a call of its own (retried, faults translated)."""
        return self.client.call(what, lambda: self._read_props(ref, paths))

    def wait_for_tasks(self, vm: VM, timeout: float = 600.0) -> tuple[str, ...]:
        """Wait until no task on the VM is queued or running (vCenter's recent tasks: e.g. a
        snapshot whose creation an interrupted run started); the names of those waited for."""
        waited: dict[str, str] = {}

        def judge(running: dict[str, str]) -> tuple[str, ...] | _Pending:
            waited.update(running)
            if running:
                return _Pending.PENDING
            return tuple(waited[key] for key in sorted(waited))

        return self._poll(
            f"read the tasks of VM {vm.name!r}", lambda: self._running_tasks(vm), judge,
            timeout,
            lambda running: f"VM {vm.name!r}: task(s) {', '.join(sorted(running.values()))} "
                            f"still running after {timeout:.0f} s")

    def _running_tasks(self, vm: VM) -> dict[str, str]:
        """Task id -> name of the VM's queued or running tasks, from TaskManager.recentTask."""
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(
                obj=self.client.content.taskManager, skip=True,
                selectSet=[PC.TraversalSpec(name="recent", type=vim.TaskManager,
                                            path="recentTask", skip=False)],
            )],
            propSet=[PC.PropertySpec(type=vim.Task, all=False,
                                     pathSet=["info.entity", "info.state", "info.name"])],
            reportMissingObjectsInResults=True,
        )
        collector = self.client.content.propertyCollector
        result = collector.RetrievePropertiesEx(specSet=[spec], options=PC.RetrieveOptions())
        running: dict[str, str] = {}
        while result is not None:
            for content in result.objects:
                for missing in content.missingSet or ():
                    if isinstance(missing.fault, vim.fault.NotAuthenticated):
                        raise _SessionLost("properties missing: the session ended")
                props = {p.name: p.val for p in content.propSet or ()}
                entity = props.get("info.entity")
                if (getattr(entity, "_moId", None) == vm.moref
                        and str(props.get("info.state")) in ("queued", "running")):
                    running[content.obj._moId] = str(props.get("info.name") or "task")
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(token=result.token)
        return running

    def create_snapshot(
        self, vm: VM, name: str, description: str, *, memory: bool, quiesce: bool
    ) -> str:
        ref = self._vm_ref(vm)
        result = self._run_task(
            f"snapshot VM {vm.name!r}",
            lambda: ref.CreateSnapshot_Task(
                name=name, description=description, memory=memory, quiesce=quiesce
            ),
        )
        return str(result._moId)

    def remove_snapshot(self, vm: VM, snapshot_id: str) -> None:
        try:
            self._run_task(
                f"remove snapshot {snapshot_id} of VM {vm.name!r}",
                lambda: self._snapshot_ref(snapshot_id).RemoveSnapshot_Task(
                    removeChildren=False, consolidate=True),
            )
        except VCenterError as exc:
            if exc.fault != "ManagedObjectNotFound":
                raise
            return  # already gone: the goal holds
        props = self._read_one("read consolidation state", self._vm_ref(vm),
                               ("runtime.consolidationNeeded",))
        if props.get("runtime.consolidationNeeded"):
            ref = self._vm_ref(vm)
            self._run_task(f"consolidate disks of VM {vm.name!r}", ref.ConsolidateVMDisks_Task)

    def shutdown_guest(self, vm: VM) -> None:
        ref = self._vm_ref(vm)
        self._mutate(f"shut down the guest of VM {vm.name!r}", ref.ShutdownGuest)

    def power_off(self, vm: VM) -> None:
        self._power(vm, "power off", lambda ref: ref.PowerOffVM_Task())

    def power_on(self, vm: VM) -> None:
        self._power(vm, "power on", lambda ref: ref.PowerOnVM_Task())

    def _power(self, vm: VM, what: str, start: Callable[[Any], Any]) -> None:
        ref = self._vm_ref(vm)
        try:
            self._run_task(f"{what} VM {vm.name!r}", lambda: start(ref))
        except VCenterError as exc:
            if exc.fault != "InvalidPowerState":
                raise  # already in the wanted state otherwise: the goal holds

    # ------------------------------------------------------------------ disks

    def snapshot_disks(self, vm: VM, snapshot_id: str) -> tuple[Disk, ...]:
        props = self._read_one(f"read the disks of snapshot {snapshot_id}",
                               self._snapshot_ref(snapshot_id), ("config.hardware.device",))
        return disks_of(props.get("config.hardware.device"))

    def _file(self, vm: VM, datastore_path: str, datacenter: str | None = None) -> DatastoreFile:
        datastore, path = parse_datastore_path(datastore_path)
        endpoint = self.client.endpoint
        return DatastoreFile(self.name, endpoint.host, endpoint.port,
                             datacenter or self._datacenter_of(vm), datastore, path)

    def _cookie(self) -> str:
        return str(self.client.stub.cookie)

    def open_disk(self, vm: VM, snapshot_id: str, disk: Disk,
                  on_lease: Callable[[str], None] | None = None) -> DiskStream:
        """A frozen disk's bytes, by the transport `choose_transport` picks for it (the
        vCenter's `transport` setting, the VM's power state, the datastore's type): the
        snapshot's base extent over the datastore HTTP interface, or an NFC export lease
        (`ExportSnapshot`, `ExportVm`). With `transport: auto` a datastore that refuses the
        read of the file falls back to `ExportSnapshot`. The stream's `transport` says which
        and why; `on_lease` hears "" just before an NFC lease is asked for and its id as soon
        as it exists (the journal keeps both, so recovery can abort a lease a killed run left,
        or say why one it cannot name may still be held)."""
        props = self._read_one(f"read the power state of VM {vm.name!r}", self._vm_ref(vm),
                               ("runtime.powerState", "config.hardware.device", "datastore"))
        datastore, _ = parse_datastore_path(disk.file)
        setting = self.client.config.transport
        try:
            transport = choose_transport(
                setting,
                powered_off=props.get("runtime.powerState") == "poweredOff",
                datastore=datastore,
                datastore_type=self._datastore_type(props.get("datastore") or (),
                                                    datastore),
            )
        except TransportUnavailable as exc:
            raise VCenterError(self.name, f"VM {vm.name!r}: {disk.label}: {exc}") from None
        devices = props.get("config.hardware.device")
        if transport.kind == "nfc":
            return self._open_nfc(vm, snapshot_id, disk, devices, transport, on_lease)
        try:
            return Transported(self._open_http(vm, disk), transport)
        except VCenterError as exc:
            if setting != "auto" or not _refused(exc):
                raise
            fallback = after_refusal(transport, exc.message)
            log.info("vCenter %r: VM %r: %s: %s", self.name, vm.name, disk.label,
                     fallback.describe())
            return self._open_nfc(vm, snapshot_id, disk, devices, fallback, on_lease)

    def _open_http(self, vm: VM, disk: Disk) -> DiskStream:
        if disk.parent:
            raise VCenterError(
                self.name,
                f"VM {vm.name!r}: {disk.label} is a delta disk on top of {disk.parent} (the VM "
                "had snapshots before vmkeep's); its data cannot be read as one file over the "
                "datastore interface. Remove or consolidate the VM's other snapshots, or "
                "export it powered off (NFC reads the whole chain)",
            )
        file = self._file(vm, disk.file)
        extent = DatastoreFile(file.vcenter, file.host, file.port, file.datacenter,
                               file.datastore, flat_extent(file.path))
        reader = RangeReader(extent, self.client.connection, self._cookie(),
                             sleep=self.client.sleep)
        helper = self.client.reader_process()
        if helper is None:
            return self._sized(reader, disk)
        reader.close()  # it told the size; the helper reads over its own connection
        return self._sized(ProcessRangeReader(helper, extent, self._cookie(), reader.size),
                           disk)

    def _datastore_type(self, refs: Any, name: str) -> str:
        """summary.type of the VM's datastore called `name` ("" when it cannot be told)."""
        cache = self._datastore_types
        if name in cache:
            return cache[name]
        refs = list(refs)
        if not refs:
            return ""
        objects = self.client.call(
            "read the VM's datastores",
            lambda: self._read_objects(refs, ("name", "summary.type")),
        )
        for obj in objects:
            cache[str(obj.props.get("name"))] = str(obj.props.get("summary.type") or "")
        return cache.get(name, "")

    def _sized(self, reader: PositionedReader, disk: Disk) -> ZeroExtended:
        """The download read as exactly the disk's capacity (unwritten tails read as zeros)."""
        if reader.size > disk.capacity_bytes:
            reader.close()
            raise VCenterError(self.name, f"{reader.file} holds {reader.size} bytes, more than "
                               f"the disk's capacity of {disk.capacity_bytes}")
        if reader.size < disk.capacity_bytes:
            log.warning("vCenter %r: %s holds %d of %d bytes; the rest reads as zeros "
                        "(unwritten)", self.name, reader.file, reader.size, disk.capacity_bytes)
        return ZeroExtended(reader, disk.capacity_bytes)

    def _open_nfc(self, vm: VM, snapshot_id: str, disk: Disk, devices: Any,
                  transport: DiskTransport,
                  on_lease: Callable[[str], None] | None) -> DiskStream:
        """One disk through an NFC export lease: `ExportVm` or the snapshot's
        `ExportSnapshot`, as `transport.method` says."""
        what = f"NFC export ({transport.method}) of {disk.label} of VM {vm.name!r}"
        def start() -> Any:  # the stub exists once the session does
            if transport.method == "ExportVm":
                return self._vm_ref(vm).ExportVm()
            return vim.vm.Snapshot(snapshot_id, self.client.stub).ExportSnapshot()

        if on_lease is not None:
            on_lease("")  # about to ask: a kill before the id is heard leaves it unnamed
        lease = self._mutate(what, start)
        if on_lease is not None:
            on_lease(str(lease._moId))
        try:
            info = self._lease_ready(what, lease)
            urls = list(getattr(info, "deviceUrl", None) or ())
            keys = [d.key for d in disks_of(devices)]
            device = device_for(
                [NfcDevice(str(u.key), str(u.url), int(u.fileSize) if u.fileSize else None,
                           bool(u.disk)) for u in urls],
                disk_slots(devices).get(disk.key),
                keys.index(disk.key) if disk.key in keys else -1,
                self.name,
                what,
            )
            endpoint = self.client.endpoint
            file = download_file(device, self.name, endpoint.host, endpoint.port,
                                 f"{what} ({device.key})")
            stream = open_disk_download(file, self.client.connection, self._cookie(),
                                        disk.capacity_bytes)
        except BaseException:
            self._end_lease(what, lease, abort=True)
            raise
        leased = LeasedStream(
            stream,
            disk.capacity_bytes,
            progress=lambda percent: self.client.call(
                f"{what}: report progress", lambda: lease.HttpNfcLeaseProgress(percent=percent)),
            complete=lambda: self._end_lease(what, lease, abort=False),
            abort=lambda: self._end_lease(what, lease, abort=True),
            every=progress_interval(getattr(info, "leaseTimeout", None)),
            lease_id=str(lease._moId),
        )
        return Transported(leased, transport, str(lease._moId))

    def _lease_ready(self, what: str, lease: Any) -> Any:
        """Wait for an NFC lease (export or import) to be ready; its `info` (device URLs,
        leaseTimeout; for an import the new VM)."""
        def late(props: Mapping[str, Any]) -> str:
            return f"{what}: lease {lease._moId} is {props.get('state')}, not ready"

        def judge(props: Mapping[str, Any]) -> Any:
            state = props.get("state")
            if state == "ready":
                return props.get("info")
            if state == "error":
                raise fault_error(self.name, what, props.get("error"))
            if state == "done":
                raise VCenterError(self.name, late(props))
            return _Pending.PENDING

        return self._poll(f"{what}: wait for the lease",
                          lambda: self._read_props(lease, ("state", "error", "info")),
                          judge, LEASE_READY_TIMEOUT, late)

    def _end_lease(self, what: str, lease: Any, *, abort: bool) -> None:
        try:
            if abort:
                self._mutate(f"{what}: abort the lease", lambda: lease.HttpNfcLeaseAbort())
            else:
                self._mutate(f"{what}: complete the lease", lambda: lease.HttpNfcLeaseComplete())
        except VCenterError as exc:
            log.warning("%s (the lease times out by itself)", exc)

    def abort_lease(self, lease_id: str) -> bool:
        """Abort an NFC lease an interrupted run left; False when it had already ended
        (completed, aborted, timed out) or is gone."""
        try:
            self._mutate(f"abort the NFC lease {lease_id} a crashed run left",
                         lambda: self.client.ref(vim.HttpNfcLease, lease_id)
                         .HttpNfcLeaseAbort())
        except VCenterError as exc:
            if exc.fault in LEASE_ENDED_FAULTS:
                return False
            raise
        return True

    def changed_extents(
        self, vm: VM, snapshot_id: str, disk: Disk, since_change_id: str
    ) -> list[tuple[int, int]] | None:
        ref = self._vm_ref(vm)
        snapshot = self._snapshot_ref(snapshot_id)
        extents: list[tuple[int, int]] = []
        offset = 0
        while offset < disk.capacity_bytes:
            try:
                info = self.client.call(
                    f"query changed areas of {disk.label} of VM {vm.name!r}",
                    lambda at=offset: ref.QueryChangedDiskAreas(  # type: ignore[misc]
                        snapshot=snapshot, deviceKey=disk.key, startOffset=at,
                        changeId=since_change_id,
                    ),
                )
            except VCenterError as exc:
                log.info("vCenter %r: no changed areas for %s (%s); reading it whole",
                         self.name, disk.label, exc.message)
                return None
            extents.extend((int(a.start), int(a.length)) for a in info.changedArea or ())
            step = int(info.startOffset) + int(info.length)
            if step <= offset:
                break
            offset = step
        return extents

    def vm_files(self, vm: VM) -> Mapping[str, bytes]:
        """The VM's .vmx and .nvram, and its virtual hardware as `vm-config.json` (what a
        restore needs besides the disks)."""
        def read_paths() -> str:
            [obj] = self._read_objects([self._vm_ref(vm)], ("config.files.vmPathName",))
            return str(obj.props.get("config.files.vmPathName") or "")

        vmx = self.client.call(f"read the files of VM {vm.name!r}", read_paths)
        if not vmx:
            return {}
        datacenter = self._datacenter_of(vm)
        files: dict[str, bytes] = {}
        for path in (vmx, vmx[: -len(".vmx")] + ".nvram" if vmx.endswith(".vmx") else ""):
            if not path:
                continue
            try:
                with RangeReader(self._file(vm, path, datacenter), self.client.connection,
                                 self._cookie(), attempts=3, sleep=self.client.sleep) as r:
                    files[path.rsplit("/", 1)[-1]] = r.read()
            except VCenterError as exc:
                if exc.http_status != 404:
                    raise
        try:  # what a restore into vCenter rebuilds the VM from (docs/restore.md)
            config = VSphereRestore(self.client, task_timeout=self._task_timeout,
                                    remembered=self._seen).vm_config(
                vm, datacenter=datacenter)
            files[CONFIG_FILE] = config.encode()
        except VCenterError as exc:
            log.warning("VM %r: its configuration is not saved with the export (it cannot "
                        "be restored into vCenter, only to a directory): %s", vm.name, exc)
        return files


def _reads_in_processes(config: VCenterConfig) -> bool:
    """Whether disks are read by helper processes: `readers: process` (the default) where
    Linux's `memfd_create` is there for their shared ring."""
    return config.readers == "process" and hasattr(os, "memfd_create")


class VCenterPool:
    """One `VSphereClient` per vCenter and thread, for the executor's thread pool."""

    def __init__(self, configs: Mapping[str, VCenterConfig],
                 passwords: Mapping[str, str]) -> None:
        self._configs = dict(configs)
        self._passwords = dict(passwords)
        self._local = threading.local()
        self._clients: list[VSphereClient] = []
        self._lock = threading.Lock()
        #: Where each vCenter's objects were found, shared by the threads' operations.
        self._remembered = {name: Remembered() for name in self._configs}
        #: Disk reader processes per vCenter, shared by the threads' clients.
        self._readers = {name: ReaderPool(c, connect_timeout=CONNECT_TIMEOUT,
                                          read_timeout=READ_TIMEOUT)
                         for name, c in self._configs.items()}

    @classmethod
    def for_config(cls, config: HostConfig,
                   resolve_password: Callable[[VCenterConfig], str]) -> VCenterPool:
        return cls(config.vcenters,
                   {name: resolve_password(vc) for name, vc in config.vcenters.items()})

    def operations(self, name: str) -> VSphereOperations:
        ops: dict[str, VSphereOperations] = getattr(self._local, "ops", None) or {}
        self._local.ops = ops
        if name not in ops:
            client = VSphereClient(self._configs[name], self._passwords[name],
                                   readers=self._readers[name])
            with self._lock:
                self._clients.append(client)
            ops[name] = VSphereOperations(client, remembered=self._remembered[name])
        return ops[name]

    def prestart_readers(self, exports: Mapping[str, int]) -> None:
        """Start the disk reader processes of the exports about to run (count per vCenter
        name) in the background; nothing for a vCenter that reads in threads."""
        for name, count in exports.items():
            config = self._configs.get(name)
            if config is not None and _reads_in_processes(config):
                self._readers[name].prestart(count)

    def ops(self) -> dict[str, VCenterOps]:
        """`VCenterOps` per vCenter name; each call is routed to the calling thread's client."""
        return {name: _ThreadRouted(self, name) for name in sorted(self._configs)}

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        for readers in self._readers.values():
            readers.close()

    def __enter__(self) -> VCenterPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ThreadRouted:
    """Forwards every `VCenterOps` call to the calling thread's own client."""

    def __init__(self, pool: VCenterPool, name: str) -> None:
        self._pool = pool
        self.name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._pool.operations(self.name), attribute)


# ---------------------------------------------------------------------- restore into vCenter

#: The setting a restored VM carries: the restore point it came from (idempotent reruns).
RESTORED_FROM = "vmkeep.restoredFrom"
_CONTROLLERS = ("ParaVirtualSCSIController", "VirtualLsiLogicController",
                "VirtualLsiLogicSASController", "VirtualBusLogicController",
                "VirtualAHCIController", "VirtualNVMEController", "VirtualIDEController")
_CONFIG_PROPERTIES = (
    "name", "config.hardware.device", "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket", "config.hardware.memoryMB", "config.guestId",
    "config.firmware", "config.version", "config.annotation", "config.uuid",
    "config.instanceUuid", "config.files.vmPathName", "resourcePool", "runtime.host",
)


class VSphereRestore(VSphereOperations):
    """The `RestoreTarget` port: what a restore reads from and does to one vCenter.

    A VM is imported whole through an NFC import lease (`ResourcePool.ImportVApp` with a
    `VirtualMachineImportSpec` built from the point's saved configuration): the lease
    creates the VM with its controllers, NICs and thin disks, and every disk is sent as a
    streamOptimized VMDK (`vmdk_stream`), zeros left out. Everything else is one task each
    (Rename_Task, PowerOffVM_Task, Destroy_Task, DeleteDatastoreFile_Task), started once.
    """

    # ------------------------------------------------------------------ at export time

    def vm_config(self, vm: VM, *, datacenter: str | None = None) -> VMConfig:
        """The VM's virtual hardware and place, saved with an export (`vm-config.json`);
        `datacenter`: its datacenter's name when the caller has just read it."""
        def read() -> VMConfig:
            [obj] = self._read_objects([self._vm_ref(vm)], _CONFIG_PROPERTIES)
            p = obj.props
            devices = list(p.get("config.hardware.device") or ())
            networks = self._network_names(devices)
            pool = p.get("resourcePool")
            pool_name = ""
            if pool is not None:
                [pobj] = self._read_objects([pool], ("name",))
                pool_name = str(pobj.props.get("name") or "")
            vmx = str(p.get("config.files.vmPathName") or "")
            return VMConfig(
                name=str(p.get("name") or vm.name),
                instance_uuid=str(p.get("config.instanceUuid") or vm.instance_uuid),
                bios_uuid=str(p.get("config.uuid") or ""),
                guest_id=str(p.get("config.guestId") or "otherGuest64"),
                firmware=str(p.get("config.firmware") or "bios"),
                hardware_version=str(p.get("config.version") or ""),
                num_cpu=int(p.get("config.hardware.numCPU") or 1),
                cores_per_socket=int(p.get("config.hardware.numCoresPerSocket") or 1),
                memory_mb=int(p.get("config.hardware.memoryMB") or 0),
                annotation=str(p.get("config.annotation") or ""),
                datacenter=datacenter or self._datacenter_of(vm),
                folder=vm.folder,
                resource_pool=pool_name,
                host=vm.host,
                datastore=parse_datastore_path(vmx)[0] if vmx.startswith("[") else "",
                controllers=tuple(
                    ControllerSpec(int(d.key), _short_type(d),
                                   int(getattr(d, "busNumber", 0) or 0),
                                   str(getattr(d, "sharedBus", "") or "noSharing"))
                    for d in devices
                    if _short_type(d) in _CONTROLLERS),
                disks=tuple(
                    DiskSpec(int(d.key), int(d.controllerKey or 0), int(d.unitNumber or 0),
                             int(d.capacityInBytes or (d.capacityInKB or 0) * 1024),
                             str(getattr(d.backing, "fileName", "") or ""),
                             bool(getattr(d.backing, "thinProvisioned", True)))
                    for d in devices if isinstance(d, vim.vm.device.VirtualDisk)),
                nics=tuple(
                    NicSpec(int(d.key), _short_type(d),
                            networks.get(int(d.key), ""), str(d.macAddress or ""),
                            str(d.addressType or "generated"),
                            None if d.unitNumber is None else int(d.unitNumber))
                    for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)),
            )

        return self.client.call(f"read the configuration of VM {vm.name!r}", read)

    def _network_names(self, devices: list[Any]) -> dict[int, str]:
        names: dict[int, str] = {}
        for d in devices:
            if not isinstance(d, vim.vm.device.VirtualEthernetCard):
                continue
            backing = d.backing
            if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
                names[int(d.key)] = str(backing.deviceName or "")
            elif isinstance(backing,
                            vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
                key = backing.port.portgroupKey
                pg = vim.dvs.DistributedVirtualPortgroup(key, self.client.stub)
                try:
                    [obj] = self._read_objects([pg], ("name",))
                    names[int(d.key)] = str(obj.props.get("name") or key)
                except vmodl.fault.ManagedObjectNotFound:
                    names[int(d.key)] = str(key)
        return names

    # ------------------------------------------------------------------ reading the place

    def _view(self, container: Any, kinds: list[Any], paths: dict[str, tuple[str, ...]]
              ) -> list[RawObject]:
        content = self.client.content
        view = content.viewManager.CreateContainerView(container=container, type=kinds,
                                                       recursive=True)
        try:
            spec = PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[PC.TraversalSpec(
                    name="traverseView", type=vim.view.ContainerView, path="view",
                    skip=False)])],
                propSet=[PC.PropertySpec(type=getattr(vim, k), pathSet=list(v), all=False)
                         for k, v in paths.items()],
            )
            # restore passes these properties on to pyVmomi calls: pyVmomi objects, not Refs
            objects, _ = self.client.retrieve(spec, view, fast=False)
            return objects
        finally:
            try:
                view.DestroyView()
            except Exception as exc:
                log.debug("vCenter %r: DestroyView failed: %s", self.name, exc)

    def vms_named(self, name: str) -> list[ExistingVM]:
        def read() -> list[ExistingVM]:
            root = self.client.content.rootFolder
            named = [o for o in self._view(root, [vim.VirtualMachine],
                                           {"VirtualMachine": ("name",)})
                     if o.props.get("name") == name]
            return [vm for vm in (self._existing(o.id) for o in named) if vm is not None]

        return self.client.call(f"look for VMs named {name!r}", read)

    def find_by_moref(self, moref: str) -> ExistingVM | None:
        return self.client.call(f"read VM {moref}", lambda: self._existing(moref))

    def find_by_uuid(self, instance_uuid: str) -> ExistingVM | None:
        def read() -> ExistingVM | None:
            ref = self.client.content.searchIndex.FindByUuid(
                uuid=instance_uuid, vmSearch=True, instanceUuid=True)
            return None if ref is None else self._existing(ref._moId)

        return self.client.call(f"look for VM {instance_uuid}", read)

    def _existing(self, moref: str) -> ExistingVM | None:
        try:
            [obj] = self._read_objects(
                [vim.VirtualMachine(moref, self.client.stub)],
                ("name", "config.instanceUuid", "runtime.powerState", "config.extraConfig",
                 "config.version"))
        except vmodl.fault.ManagedObjectNotFound:
            return None
        if not obj.props:
            return None
        extra = {str(o.key): str(o.value) for o in obj.props.get("config.extraConfig") or ()}
        return ExistingVM(moref, str(obj.props.get("name") or ""),
                          str(obj.props.get("config.instanceUuid") or ""),
                          str(obj.props.get("runtime.powerState") or ""),
                          extra.get(RESTORED_FROM, ""), str(obj.props.get("config.version") or ""))

    def survey(self, config: VMConfig, *, name: str, folder: str | None, host: str | None,
               cluster: str | None, resource_pool: str | None) -> RestoreSurvey:
        return self.client.call(
            f"look at where VM {name!r} would be restored",
            lambda: self._survey(config, name, folder, host, cluster, resource_pool))

    def _survey(self, config: VMConfig, name: str, folder: str | None, host: str | None,
                cluster: str | None, resource_pool: str | None) -> RestoreSurvey:
        content = self.client.content
        root = content.rootFolder
        dcs = {o.props.get("name"): o for o in self._view(
            root, [vim.Datacenter],
            {"Datacenter": ("name", "vmFolder", "hostFolder", "datastore", "network")})}
        problems: list[str] = []
        wanted_dc = (folder.strip("/").split("/")[0] if folder else "") or config.datacenter
        dc = dcs.get(wanted_dc) or (next(iter(dcs.values())) if len(dcs) == 1 and not folder
                                    else None)
        if dc is None:
            listed = ", ".join(sorted(str(n) for n in dcs))
            problems.append(f"no datacenter {wanted_dc!r} in vCenter {self.name!r} "
                            f"(datacenters: {listed})")
            return RestoreSurvey(self.name, None, {}, (), None, tuple(self._named(name)),
                                 self._original(config), problems=tuple(problems))
        dc_name = str(dc.props["name"])
        dc_ref = vim.Datacenter(dc.id, self.client.stub)
        # datastores and networks of the datacenter
        stores = self._read_objects(list(dc.props.get("datastore") or []) or [dc_ref],
                                    ("name", "summary.freeSpace", "summary.capacity")) \
            if dc.props.get("datastore") else []
        datastores = {str(s.props.get("name")): DatastoreSpace(
            str(s.props.get("name")), int(s.props.get("summary.freeSpace") or 0),
            int(s.props.get("summary.capacity") or 0)) for s in stores}
        nets = self._read_objects(list(dc.props.get("network") or []), ("name",)) \
            if dc.props.get("network") else []
        networks = tuple(sorted({str(n.props.get("name")) for n in nets}))
        # folder
        folder_path = folder or config.folder or f"/{dc_name}/vm"
        found = content.searchIndex.FindByInventoryPath(folder_path.strip("/"))
        if found is None and folder is None:
            folder_path = f"/{dc_name}/vm"
            found = content.searchIndex.FindByInventoryPath(folder_path.strip("/"))
        if not isinstance(found, vim.Folder):
            problems.append(f"no VM folder {folder_path!r} in vCenter {self.name!r}")
        # compute: host or cluster, and the resource pool
        computes = self._view(dc.props["hostFolder"], [vim.ComputeResource, vim.HostSystem],
                              {"ComputeResource": ("name", "resourcePool", "host"),
                               "HostSystem": ("name", "parent")})
        hosts = {str(o.props.get("name")): o for o in computes if o.kind == "HostSystem"}
        clusters = {str(o.props.get("name")): o for o in computes
                    if o.kind in ("ClusterComputeResource", "ComputeResource")}
        chosen_host: RawObject | None = None
        compute: RawObject | None = None
        if host is not None:
            chosen_host = hosts.get(host)
            if chosen_host is None:
                problems.append(f"no host {host!r} in datacenter {dc_name!r} (hosts: "
                                f"{', '.join(sorted(hosts)) or 'none'})")
        elif cluster is not None:
            compute = clusters.get(cluster)
            if compute is None or compute.kind != "ClusterComputeResource":
                names = sorted(n for n, o in clusters.items()
                               if o.kind == "ClusterComputeResource")
                problems.append(f"no cluster {cluster!r} in datacenter {dc_name!r} (clusters: "
                                f"{', '.join(names) or 'none'})")
                compute = None
        else:
            chosen_host = hosts.get(config.host) or (
                next(iter(sorted(hosts.items())))[1] if hosts else None)
        if chosen_host is not None:
            parent = chosen_host.props.get("parent")
            compute = next((o for o in clusters.values() if parent is not None
                            and o.id == parent._moId), None)
        pool_id = pool_path = ""
        if compute is not None:
            pools = self._view(getattr(vim, compute.kind)(compute.id, self.client.stub),
                               [vim.ResourcePool], {"ResourcePool": ("name",)})
            root_pool = compute.props.get("resourcePool")
            wanted_pool = resource_pool or config.resource_pool
            match = [p for p in pools if p.props.get("name") == wanted_pool]
            if match:
                pool_id, pool_path = match[0].id, str(wanted_pool)
            elif resource_pool is not None:
                problems.append(f"no resource pool {resource_pool!r} in "
                                f"{compute.props.get('name')!r} (pools: "
                                f"{', '.join(sorted(str(p.props.get('name')) for p in pools))})")
            elif root_pool is not None:
                pool_id, pool_path = root_pool._moId, "Resources"
        max_hw = self._max_hardware(compute)
        placement = None
        if not problems and isinstance(found, vim.Folder) and pool_id:
            placement = Placement(
                dc_name, "/" + folder_path.strip("/"), found._moId,
                f"{compute.props.get('name') if compute else ''}/{pool_path}", pool_id,
                str(chosen_host.props.get("name")) if chosen_host else "",
                chosen_host.id if chosen_host else "")
        return RestoreSurvey(self.name, placement, datastores, networks, max_hw,
                             tuple(self._named(name)), self._original(config),
                             problems=tuple(problems))

    def _named(self, name: str) -> list[ExistingVM]:
        root = self.client.content.rootFolder
        return [vm for o in self._view(root, [vim.VirtualMachine], {"VirtualMachine": ("name",)})
                if o.props.get("name") == name and (vm := self._existing(o.id)) is not None]

    def _original(self, config: VMConfig) -> ExistingVM | None:
        ref = self.client.content.searchIndex.FindByUuid(
            uuid=config.instance_uuid, vmSearch=True, instanceUuid=True)
        return None if ref is None else self._existing(ref._moId)

    def _max_hardware(self, compute: RawObject | None) -> int | None:
        if compute is None:
            return None
        try:
            [obj] = self._read_objects([getattr(vim, compute.kind)(compute.id, self.client.stub)],
                                       ("environmentBrowser",))
            browser = obj.props.get("environmentBrowser")
            if browser is None:
                return None
            found = [hardware_number(str(d.key)) for d in
                     browser.QueryConfigOptionDescriptor() or () if d.createSupported]
        except (vmodl.MethodFault, AttributeError) as exc:
            log.debug("vCenter %r: hardware versions unknown: %s", self.name, exc)
            return None
        numbers = [n for n in found if n is not None]
        return max(numbers) if numbers else None

    def directory_exists(self, datacenter: str, datastore: str, directory: str) -> bool:
        endpoint = self.client.endpoint
        file = DatastoreFile(self.name, endpoint.host, endpoint.port, datacenter, datastore,
                             directory.rstrip("/") + "/")
        conn = self.client.connection(file.host, file.port)
        try:
            conn.request("HEAD", file.request_path, headers={"Cookie": self._cookie()})
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(self.name, f"look for {file}: {exc}") from exc
        finally:
            conn.close()

    # ------------------------------------------------------------------ building a VM

    def import_vm(self, spec: BuildSpec, disks: Any, progress: Any,
                  on_created: Any) -> CreatedVM:
        """Create the VM through an NFC import lease and stream every disk into it.

        `disks`: (disk name, size, blocks factory) per disk of `spec.disks`, in that order;
        `progress(name, done, total)`; `on_created(moref)` as soon as the VM exists (the
        caller journals it). On any failure the lease is aborted and the error raised; the
        caller removes the VM (a real vCenter removes it itself when the lease is aborted).
        """
        what = f"import VM {spec.name!r}"
        stub = self.client.stub
        pool = vim.ResourcePool(spec.placement.pool_id, stub)
        folder = vim.Folder(spec.placement.folder_id, stub)
        host = vim.HostSystem(spec.placement.host_id, stub) if spec.placement.host_id else None
        import_spec = vim.vm.VmImportSpec(configSpec=self._config_spec(spec))
        lease = self._mutate(what, lambda: pool.ImportVApp(spec=import_spec, folder=folder,
                                                           host=host))
        try:
            info = self._lease_ready(what, lease)  # an import lease is waited for alike
            urls = list(getattr(info, "deviceUrl", None) or ())
            entity = getattr(info, "entity", None)
            if entity is None:
                raise VCenterError(self.name, f"{what}: the lease names no VM")
            moref = str(entity._moId)
            on_created(moref)
            by_target = {str(u.targetId): u for u in urls if u.disk and u.targetId}
            in_order = [u for u in urls if u.disk]
            total = sum(size for _, size, _ in disks)
            sent_before = 0
            sent: dict[str, int] = {}
            for index, ((name, size, blocks), target) in enumerate(
                    zip(disks, spec.disks, strict=True)):
                base = target.file.rsplit("/", 1)[-1]
                url = by_target.get(base) or (in_order[index] if index < len(in_order)
                                              else None)
                if url is None:
                    raise VCenterError(self.name, f"{what}: the lease has no URL for {name}")
                sent[name] = self._send_disk(what, str(url.url), name, size, blocks, progress)
                sent_before += size
                percent = int(100 * sent_before / total) if total else 100
                self._lease_progress(what, lease, percent)
        except BaseException:
            self._end_lease(what, lease, abort=True)
            raise
        self._mutate(f"{what}: complete the lease", lambda: lease.HttpNfcLeaseComplete())
        vm = self._existing(moref)
        return CreatedVM(moref, spec.name, vm.instance_uuid if vm else spec.instance_uuid,
                         sent)

    def _lease_progress(self, what: str, lease: Any, percent: int) -> None:
        self.client.call(f"{what}: report progress",
                          lambda: lease.HttpNfcLeaseProgress(percent=percent))

    def _send_disk(self, what: str, url: str, name: str, size: int, blocks: Any,
                   progress: Any) -> int:
        """PUT one disk as a streamOptimized VMDK (chunked); the bytes sent."""
        endpoint = self.client.endpoint
        parsed = urlsplit(url.replace("*", endpoint.host, 1))
        host = endpoint.host if parsed.hostname in (None, "*") else parsed.hostname
        port = parsed.port or endpoint.port
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        progress(name, 0, size)
        stats = StreamStats()
        body = stream_optimized(blocks(), size, stats=stats,
                                progress=lambda done: progress(name, done, size))
        conn = self.client.connection(host, port)
        try:
            conn.putrequest("PUT", path)
            conn.putheader("Cookie", self._cookie())
            conn.putheader("Content-Type", "application/x-vnd.vmware-streamVmdk")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for piece in body:
                if piece:
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
            response = conn.getresponse()
            answer = response.read()[:200].decode("utf-8", "replace").strip()
            if response.status not in (200, 201, 204):
                raise VCenterError(self.name, f"{what}: upload of {name} failed: HTTP "
                                   f"{response.status} {answer}".rstrip())
        except (OSError, http.client.HTTPException) as exc:
            raise VCenterError(self.name, f"{what}: upload of {name} failed: {exc}") from exc
        finally:
            conn.close()
        return stats.sent

    def _config_spec(self, spec: BuildSpec) -> Any:
        config: VMConfig = spec.config
        dev = vim.vm.device
        add, create = dev.VirtualDeviceSpec.Operation.add, dev.VirtualDeviceSpec.FileOperation
        changes: list[Any] = []
        keys: dict[int, int] = {}
        for n, c in enumerate(config.controllers):
            if c.kind == "VirtualIDEController":
                keys[c.key] = 200 + c.bus  # every VM has its two IDE controllers
                continue
            device = getattr(dev, c.kind)(key=-100 - n, busNumber=c.bus)
            if hasattr(device, "sharedBus"):
                device.sharedBus = c.sharing
            keys[c.key] = device.key
            changes.append(dev.VirtualDeviceSpec(operation=add, device=device))
        for n, d in enumerate(spec.disks):
            backing = dev.VirtualDisk.FlatVer2BackingInfo(fileName=d.file, diskMode="persistent",
                                                          thinProvisioned=True)
            disk = dev.VirtualDisk(key=-1000 - n, controllerKey=keys.get(d.controller_key,
                                                                         d.controller_key),
                                   unitNumber=d.unit, capacityInBytes=d.capacity_bytes,
                                   capacityInKB=(d.capacity_bytes + 1023) // 1024,
                                   backing=backing)
            changes.append(dev.VirtualDeviceSpec(operation=add, fileOperation=create.create,
                                                 device=disk))
        networks = self._networks_by_name(spec.placement.datacenter)
        for n, nic in enumerate(config.nics):
            network = spec.networks.get(nic.network, nic.network)
            card = getattr(dev, nic.kind, dev.VirtualVmxnet3)(key=-2000 - n)
            card.backing = self._nic_backing(network, networks.get(network))
            card.connectable = dev.VirtualDevice.ConnectInfo(startConnected=True,
                                                             allowGuestControl=True)
            if spec.keep_macs and nic.mac:
                card.addressType, card.macAddress = "manual", nic.mac
            else:
                card.addressType = "generated"
            changes.append(dev.VirtualDeviceSpec(operation=add, device=card))
        # the files are named after the directory (the final name), not the temporary name
        vmx = f"[{spec.datastore}] {spec.directory}/{spec.directory}.vmx"
        return vim.vm.ConfigSpec(
            name=spec.name, guestId=config.guest_id, numCPUs=config.num_cpu,
            numCoresPerSocket=config.cores_per_socket, memoryMB=config.memory_mb,
            firmware=config.firmware, version=config.hardware_version or None,
            annotation=config.annotation, instanceUuid=spec.instance_uuid,
            uuid=spec.bios_uuid or None, files=vim.vm.FileInfo(vmPathName=vmx),
            extraConfig=[vim.option.OptionValue(key=RESTORED_FROM, value=spec.restored_from)],
            deviceChange=changes)

    def _networks_by_name(self, datacenter: str) -> dict[str, Any]:
        dc = self.client.content.searchIndex.FindByInventoryPath(datacenter)
        if dc is None:
            return {}
        [obj] = self._read_objects([dc], ("network",))
        refs = list(obj.props.get("network") or ())
        if not refs:
            return {}
        named = self._read_objects(refs, ("name",))
        by_id = {r._moId: r for r in refs}
        return {str(o.props.get("name")): by_id[o.id] for o in named}

    def _nic_backing(self, network: str, ref: Any) -> Any:
        card = vim.vm.device.VirtualEthernetCard
        if isinstance(ref, vim.dvs.DistributedVirtualPortgroup):
            [pg] = self._read_objects([ref], ("key", "config.distributedVirtualSwitch"))
            switch = pg.props.get("config.distributedVirtualSwitch")
            [sw] = self._read_objects([switch], ("uuid",))
            return card.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(portgroupKey=str(pg.props.get("key")),
                                            switchUuid=str(sw.props.get("uuid"))))
        return card.NetworkBackingInfo(deviceName=network, network=ref)

    # ------------------------------------------------------------------ one task each

    def _vm_task(self, moref: str, what: str, start: Callable[[Any], Any]) -> Any:
        ref = vim.VirtualMachine(moref, self.client.stub)
        return self._run_task(what, lambda: start(ref))

    def rename(self, moref: str, name: str) -> None:
        self._vm_task(moref, f"rename VM {moref} to {name!r}", lambda r: r.Rename_Task(name))

    def _vm_task_unless(self, moref: str, what: str, start: Callable[[Any], Any],
                        done_already: str) -> None:
        """A VM task whose fault `done_already` means its work is already done."""
        try:
            self._vm_task(moref, what, start)
        except VCenterError as exc:
            if exc.fault != done_already:
                raise

    def power_off_vm(self, moref: str) -> None:
        self._vm_task_unless(moref, f"power off VM {moref}", lambda r: r.PowerOffVM_Task(),
                             "InvalidPowerState")

    def power_on_vm(self, moref: str) -> None:
        self._vm_task_unless(moref, f"power on VM {moref}", lambda r: r.PowerOnVM_Task(),
                             "InvalidPowerState")

    def destroy(self, moref: str) -> None:
        self._vm_task_unless(moref, f"remove VM {moref}", lambda r: r.Destroy_Task(),
                             "ManagedObjectNotFound")

    def delete_directory(self, datacenter: str, directory: str) -> bool:
        """Delete `[ds] dir` (made by this restore); False when it was not there."""
        dc = self.client.call("find the datacenter",
                               lambda: self.client.content.searchIndex.FindByInventoryPath(
                                   datacenter))
        manager = self.client.content.fileManager
        try:
            self._run_task(f"delete {directory}",
                           lambda: manager.DeleteDatastoreFile_Task(name=directory,
                                                                    datacenter=dc))
        except VCenterError as exc:
            if exc.fault in NOT_FOUND_FAULTS:
                return False
            raise
        return True

    def revert(self, moref: str, snapshot_id: str) -> None:
        snapshot = vim.vm.Snapshot(snapshot_id, self.client.stub)
        self._run_task(f"revert VM {moref} to snapshot {snapshot_id}",
                       lambda: snapshot.RevertToSnapshot_Task(suppressPowerOn=True))

    def clone_from_snapshot(self, moref: str, snapshot_id: str, spec: BuildSpec,
                            on_created: Any) -> CreatedVM:
        """A full clone of VM `moref` as snapshot `snapshot_id` froze it, named `spec.name`."""
        stub = self.client.stub
        relocate = vim.vm.RelocateSpec(
            datastore=self._datastore_ref(spec.placement.datacenter, spec.datastore),
            pool=vim.ResourcePool(spec.placement.pool_id, stub),
            host=vim.HostSystem(spec.placement.host_id, stub) if spec.placement.host_id
            else None,
            diskMoveType="moveAllDiskBackingsAndDisallowSharing")
        clone = vim.vm.CloneSpec(
            location=relocate, powerOn=False, template=False,
            snapshot=vim.vm.Snapshot(snapshot_id, stub),
            config=vim.vm.ConfigSpec(
                instanceUuid=spec.instance_uuid,
                extraConfig=[vim.option.OptionValue(key=RESTORED_FROM,
                                                    value=spec.restored_from)]))
        result = self._vm_task(moref, f"clone VM {moref} as {spec.name!r}",
                               lambda r: r.CloneVM_Task(
                                   folder=vim.Folder(spec.placement.folder_id, stub),
                                   name=spec.name, spec=clone))
        created = str(result._moId)
        on_created(created)
        vm = self._existing(created)
        return CreatedVM(created, spec.name, vm.instance_uuid if vm else spec.instance_uuid)

    def _datastore_ref(self, datacenter: str, name: str) -> Any:
        dc = self.client.content.searchIndex.FindByInventoryPath(datacenter)
        [obj] = self._read_objects([dc], ("datastore",))
        refs = list(obj.props.get("datastore") or ())
        for o in self._read_objects(refs, ("name",)) if refs else []:
            if o.props.get("name") == name:
                return vim.Datastore(o.id, self.client.stub)
        raise VCenterError(self.name, f"no datastore {name!r} in datacenter {datacenter!r}")


# ---------------------------------------------------------------------- the watch cache


class VSphereWatch:
    """vmkeep's inventory of one vCenter kept current with `WaitForUpdatesEx` (issue 14).

    The controller's observe: a filter (CreateFilter) on the same ContainerView spec the
    full read uses; the first tick and every tick after a session loss (a new session
    cookie, a vanished filter or view, an invalid collector version) read everything as
    `enter` updates; the other ticks ask only for the changes since the last version
    (`maxWaitSeconds=0`: never blocks) and apply them — `enter`/`modify` assign properties,
    `remove`/`indirectRemove` drop them, `leave` drops the object. Tags come over REST,
    which has no change feed: they are read again every tick. With the client's
    `fast_inventory` (the default) the answers are read from their SOAP bytes by
    `vsphere_fast`, like the full read's pages: at 10,000 VMs the first one is as big as a
    full read (about 6x faster than pyVmomi's deserialiser, docs/benchmarks.md).
    """

    def __init__(self, client: VSphereClient) -> None:
        self.client = client
        self._objects: dict[str, tuple[str, dict[str, Any]]] = {}
        self._fields: list[Any] = []
        self._version: str | None = None
        self._session: str | None = None
        self._view: Any = None
        self._filter: Any = None
        self._collector: Any = None
        #: Full reads done (the first tick and one per session loss), for tests and benches.
        self.full_reads = 0

    def close(self) -> None:
        self.client.close()

    def inventory(self) -> Inventory:
        """The cached inventory, brought up to date (tags read again)."""
        # Like the full read, the fast reader pauses the cyclic collector: a start reads
        # every object at once.
        fast = self.client.fast_inventory
        with collector_paused() if fast else contextlib.nullcontext():
            objects, fields = self.client.call("watch the inventory", self._sync)
            tags = self.client._read_tags()
            inventory, skipped = build_inventory(self.client.name, objects, fields, tags)
        for reason in skipped:
            log.warning("vCenter %r: VM left out of the inventory: %s", self.client.name, reason)
        return inventory

    def _sync(self) -> tuple[list[RawObject], list[Any]]:
        content = self.client.content
        if self._version is None or self._session != self.client.stub.cookie:
            self._start()
        else:
            try:
                self._updates()
            except (vmodl.fault.ManagedObjectNotFound, vmodl.query.InvalidCollectorVersion,
                    vmodl.fault.InvalidArgument) as exc:
                log.info("vCenter %r: the watch is gone (%s); reading everything again",
                         self.client.name, type(exc).__name__)
                self._start()
        root = content.rootFolder._moId
        if not self._objects.get(root, ("", {}))[1]:
            self._version = None
            raise _SessionLost("the root folder was not readable")
        objects = [RawObject(kind, moid, props) for moid, (kind, props) in self._objects.items()
                   if moid != root]
        return objects, self._fields

    def _start(self) -> None:
        content = self.client.content
        self._version = None
        self._objects.clear()
        self._fields = []
        self._session = self.client.stub.cookie
        old = [(self._filter, "DestroyPropertyFilter"), (self._view, "DestroyView"),
               (self._collector, "DestroyPropertyCollector")]
        for thing, destroy in old:  # the old session's, if it is still alive
            if thing is not None:
                try:
                    getattr(thing, destroy)()
                except Exception as exc:  # they die with their session anyway
                    log.debug("vCenter %r: %s failed: %s", self.client.name, destroy, exc)
        self._filter = self._view = self._collector = None
        # A collector of its own: its filter and updates are nobody else's (a session's
        # default collector is shared by every caller of WaitForUpdates, e.g. task waits).
        self._collector = content.propertyCollector.CreatePropertyCollector()
        self._view = content.viewManager.CreateContainerView(
            container=content.rootFolder, type=_inventory_kinds(), recursive=True)
        spec = self.client._inventory_spec(self._view)  # the objects the full read reads
        self._filter = self._collector.CreateFilter(spec, partialUpdates=False)
        self.full_reads += 1
        self._version = ""
        try:
            self._updates()
        except BaseException:
            self._version = None  # a half-read start is started again
            raise

    def _updates(self) -> None:
        options = PC.WaitOptions(maxWaitSeconds=0)
        while True:
            result = self._wait(options)
            if result is None:
                return
            if result.gone:
                raise _SessionLost(f"a watched object is gone: {result.gone[0]}")
            for update in result.objects:
                self._apply(update)
            self._version = result.version
            if not result.truncated:
                return

    def _wait(self, options: Any) -> UpdateSet | None:
        """One WaitForUpdatesEx: read from its SOAP bytes by `vsphere_fast` (the client's
        `fast_inventory`; faults still come through pyVmomi), else through pyVmomi — at
        10,000 VMs the first answer, everything as `enter` updates, is as big as a full read."""
        if self.client.fast_inventory:
            body = self.client._fetch_page(self._collector, "WaitForUpdatesEx",
                                           [self._version, options])
            try:
                return parse_updates(body)
            except ElementTree.ParseError as exc:
                raise VCenterError(self.client.name, f"watch the inventory: an answer is not "
                                   f"well-formed XML ({exc})") from None
        result = self._collector.WaitForUpdatesEx(version=self._version, options=options)
        if result is None:
            return None
        updates = UpdateSet(result.version, bool(result.truncated))
        for filter_update in result.filterSet or ():
            updates.gone += [_short_type(m.fault)
                             for m in filter_update.missingSet or ()]
            for update in filter_update.objectSet or ():
                obj = update.obj
                updates.objects.append(ObjectUpdate(
                    update.kind, obj._wsdlName, obj._moId,
                    [(c.name, c.op, c.val) for c in update.changeSet or ()],
                    [Missing(obj._wsdlName, obj._moId, m.path,
                             _short_type(m.fault))
                     for m in update.missingSet or ()]))
        return updates

    def _apply(self, update: ObjectUpdate) -> None:
        if update.kind == "leave":
            self._objects.pop(update.id, None)
            return
        for missing in update.missing:
            self.client._check_missing(missing, self._view._moId)
        if update.obj_kind == "CustomFieldsManager":
            for name, op, val in update.changes:
                if name == "field":
                    self._fields = list(val or []) if op == "assign" else []
            return
        _, props = self._objects.setdefault(update.id, (update.obj_kind, {}))
        for name, op, val in update.changes:
            if op in ("remove", "indirectRemove"):
                props.pop(name, None)
            else:
                props[name] = val
