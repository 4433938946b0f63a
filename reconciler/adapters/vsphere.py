"""The vSphere adapter: talks SOAP to one vCenter. The only module that imports pyVmomi.

    with VSphereClient(config, password) as client:
        inventory = client.inventory()

How it talks:

* **TLS** is verified with an explicit context (`vsphere_tls`): caFile or the system CAs,
  or a pinned thumbprint; ``insecure: true`` turns it off, with a warning. The API version
  is negotiated from ``/sdk/vimServiceVersions.xml`` before any credential is sent.
* **Every call** goes through `_soap`: it logs in when needed, logs in again when the session
  was lost (``NotAuthenticated``; an expired session can also show up as a result whose
  properties are all in ``missingSet``, or as a vanished ContainerView) and retries
  transient failures (connection refused/reset, server disconnects, HTTP 502/503/504,
  timeouts) with bounded exponential backoff (`retry`). Only idempotent reads go through
  it for now; a mutating call added later must not be retried after its request was sent.
* **Errors** come out as `AuthenticationError` (naming the vCenter and user, never the
  password), `CertificateError` (with what the server presented and what to set),
  `TransientError` (after the retries) or `VCenterError`.
* **The inventory** is one paged PropertyCollector read over a ContainerView
  (RetrievePropertiesEx, then ContinueRetrievePropertiesEx per page) asking only for the
  properties `vsphere_inventory` lists; conversion to model values happens there, purely.
  Pages are read from their SOAP bytes by `vsphere_fast` (7-8x faster than pyVmomi's
  deserialiser at 10,000 VMs), the next page asked for while one is parsed; requests and
  faults still go through pyVmomi. `fast_inventory=False` reads pages with pyVmomi.
  Tags come from the REST tagging API (`vsphere_tags`) when the vCenter serves it.
* **Disk data** of a snapshot is read over the datastore HTTP interface (`datastore`,
  resumable Range reads) while the VM runs, and through an NFC export lease (`ExportVm`,
  `nfc`) when it is powered off; changed block tracking (`QueryChangedDiskAreas`) narrows an
  export to the extents changed since the previous point's `changeId`.

A client is meant for one thread at a time; use one client per worker thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import io
import logging
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from pyVmomi import SoapStubAdapter, vim, vmodl
from pyVmomi.SoapAdapter import SoapResponseDeserializer
from pyVmomi.VmomiSupport import GetServiceVersions, versionIdMap

from reconciler.adapters.datastore import (
    DatastoreFile,
    RangeReader,
    ZeroExtended,
    flat_extent,
    parse_datastore_path,
)
from reconciler.adapters.nfc import (
    LeasedStream,
    NfcDevice,
    device_for,
    download_file,
    open_disk_download,
)
from reconciler.adapters.retry import RetryPolicy, call_with_retries
from reconciler.adapters.vsphere_fast import (
    Missing,
    Page,
    collector_paused,
    parse_page,
    token_of,
)
from reconciler.adapters.vsphere_inventory import (
    CONTAINER_PROPERTIES,
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
from reconciler.errors import (
    AuthenticationError,
    CertificateError,
    TransientError,
    VCenterError,
    VmkeepError,
)
from reconciler.model import VM, Disk, HostConfig, Inventory, VCenterConfig
from reconciler.ports import DiskStream

__all__ = ["VCenterPool", "VSphereClient", "VSphereOperations"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Used when the server does not say which API versions it speaks (vSphere 6.5).
FALLBACK_VERSION = "vim.version.version11"
#: How often one attempt may log in again because its session ended under it.
MAX_RELOGINS = 2
PC = vmodl.query.PropertyCollector


class _SessionLost(Exception):
    """The session ended (expired, terminated, server restarted): log in again."""


class VSphereClient:
    """A connection to one vCenter; implements the `InventorySource` port."""

    def __init__(
        self,
        config: VCenterConfig,
        password: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        page_size: int = 1000,
        tags: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        fast_inventory: bool = True,
    ) -> None:
        self.config = config
        self._password = password
        self._endpoint = endpoint_of(config)
        self._connection = pinned_connection(
            ssl_context(config),
            pin_of(config),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._policy = RetryPolicy(attempts=retries + 1, base_delay=backoff)
        self._page_size = page_size
        self._tags = tags
        self._sleep = sleep
        #: Read inventory pages from their SOAP bytes (`vsphere_fast`), not through pyVmomi.
        self.fast_inventory = fast_inventory
        self._stub: Any = None
        self._content: Any = None
        self._logged_in = False

    @property
    def name(self) -> str:
        return self.config.name

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
            objects, fields = self._soap("read the inventory", self._read_inventory)
            tags = self._read_tags()
            inventory, skipped = build_inventory(self.name, objects, fields, tags)
        for reason in skipped:
            log.warning("vCenter %r: VM left out of the inventory: %s", self.name, reason)
        return inventory

    def _read_inventory(self) -> tuple[list[RawObject], list[Any]]:
        content = self._content
        view = content.viewManager.CreateContainerView(
            container=content.rootFolder,
            type=[vim.VirtualMachine, vim.Folder, vim.Datacenter, vim.VirtualApp, vim.HostSystem],
            recursive=True,
        )
        try:
            objects, fields = self._retrieve(self._inventory_spec(view), view)
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

    def _retrieve(self, spec: Any, view: Any) -> tuple[list[RawObject], list[Any]]:
        """One RetrievePropertiesEx and its continuation pages.

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
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            try:
                if self.fast_inventory:
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
                    elif self.fast_inventory:
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
                Missing(obj._wsdlName, obj._moId, m.path, type(m.fault).__name__.rsplit(".", 1)[-1])
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
        host, port = self._endpoint.host, self._endpoint.port

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
                lambda: self._translated("read tags", read), self._policy, sleep=self._sleep
            )
        except TransientError as exc:
            log.warning("vCenter %r: tags not read, %s", self.name, exc)
            return None

    # ------------------------------------------------------------------ calls

    def _soap(self, what: str, operation: Callable[[], T]) -> T:
        """Run SOAP calls with a live session, logging in again and retrying as needed."""

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

        return call_with_retries(
            lambda: self._translated(what, attempt), self._policy, sleep=self._sleep
        )

    def _ensure_session(self) -> None:
        if self._stub is None:
            stub: Any = SoapStubAdapter(
                host=self._endpoint.host,
                port=self._endpoint.port,
                path=self._endpoint.path,
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
        conn = self._connection(self._endpoint.host, self._endpoint.port)
        try:
            conn.request("GET", f"{self._endpoint.path}/vimServiceVersions.xml")
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
            if isinstance(error, TransientError):
                self._drop_connections()
            raise error from exc

    def _drop_connections(self) -> None:
        if self._stub is not None:
            self._stub.DropConnections()

    def _translate(self, what: str, exc: Exception) -> VmkeepError | None:
        """The VmkeepError for a failure, or None for a bug that should surface as is."""
        name, endpoint = self.name, self._endpoint
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
            fault = type(exc).__name__.rsplit(".", 1)[-1]
            message = getattr(exc, "msg", "") or ""
            text = f"{what}: {fault}{': ' + message if message else ''}"
            if fault in BUSY_FAULTS:  # refused, nothing done: the object was busy
                return TransientError(name, text, 2.0)
            return VCenterError(name, text)
        return None


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
# What `vmkeep apply` does to a vCenter (the `VCenterOps` port). Reads go through `_soap`
# (re-login and retries); mutations through `_mutate`, which logs in again when the server
# refused the request for want of a session (it did nothing then) but never repeats a request
# that may have been carried out: a transient failure there surfaces as `TransientError`, and
# the executor retries the whole action, which re-reads reality first.

#: Task faults worth retrying (the object was busy), by pyVmomi class name.
BUSY_FAULTS = frozenset({"TaskInProgress", "ConcurrentAccess", "ResourceInUse"})
#: Seconds between task state polls (growing up to the maximum).
TASK_POLL = (0.05, 1.0)
#: How long an NFC export lease may take to become ready.
LEASE_READY_TIMEOUT = 300.0


class VSphereOperations:
    """The `VCenterOps` port on top of one `VSphereClient` (one thread at a time)."""

    def __init__(self, client: VSphereClient, *, task_timeout: float = 3600.0) -> None:
        self.client = client
        self.name = client.name
        self._task_timeout = task_timeout

    # ------------------------------------------------------------------ reading a VM

    def find_vm(self, instance_uuid: str) -> VM | None:
        c = self.client

        def read() -> VM | None:
            ref = c._content.searchIndex.FindByUuid(
                uuid=instance_uuid, vmSearch=True, instanceUuid=True
            )
            if ref is None:
                return None
            objects = self._read_objects([ref], VM_PROPERTIES)
            chain = self._ancestors(objects[0].props.get("parent")
                                    or objects[0].props.get("parentVApp"))
            host = objects[0].props.get("runtime.host")
            hosts = self._read_objects([host], HOST_PROPERTIES) if host is not None else []
            fields = c._content.customFieldsManager.field if c._content.customFieldsManager \
                else []
            inventory, _ = build_inventory(self.name, [*objects, *chain, *hosts], fields, None)
            return inventory.vms[0] if inventory.vms else None

        return c._soap(f"read VM {instance_uuid}", read)

    def _read_objects(self, refs: list[Any], paths: tuple[str, ...]) -> list[RawObject]:
        kind = type(refs[0])
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=r, skip=False) for r in refs],
            propSet=[PC.PropertySpec(type=kind, pathSet=list(paths), all=False)],
        )
        result = self.client._content.propertyCollector.RetrievePropertiesEx(
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
            result = self.client._content.propertyCollector.ContinueRetrievePropertiesEx(
                token=result.token
            )
        return objects

    def _ancestors(self, ref: Any) -> list[RawObject]:
        """Folders, vApps and the datacenter above an object, nearest first."""
        chain: list[RawObject] = []
        while ref is not None and len(chain) < 64:
            kind = ref._wsdlName
            if kind not in CONTAINER_PROPERTIES:
                break
            [obj] = self._read_objects([ref], CONTAINER_PROPERTIES[kind])
            ref = obj.props.get("parent") or obj.props.get("parentVApp") \
                or obj.props.get("parentFolder")
            if ref is None:
                break  # the root folder is not part of inventory paths
            chain.append(obj)
        return chain

    def _datacenter_of(self, vm: VM) -> str:
        def read() -> str:
            [obj] = self._read_objects([self._vm_ref(vm)], ("parent", "parentVApp"))
            for node in self._ancestors(obj.props.get("parent") or obj.props.get("parentVApp")):
                if node.kind == "Datacenter":
                    return str(node.props.get("name"))
            raise VCenterError(self.name, f"VM {vm.name!r} is in no datacenter")

        return self.client._soap(f"find the datacenter of VM {vm.name!r}", read)

    def _vm_ref(self, vm: VM) -> Any:
        return vim.VirtualMachine(vm.moref, self.client._stub)

    # ------------------------------------------------------------------ mutations

    def _mutate(self, what: str, operation: Callable[[], T]) -> T:
        c = self.client

        def attempt() -> T:
            for _ in range(MAX_RELOGINS + 1):
                try:
                    c._ensure_session()
                    return operation()
                except (_SessionLost, vim.fault.NotAuthenticated) as exc:
                    log.info("vCenter %r: session lost (%s); logging in again", self.name, exc)
                    c._logged_in = False
            raise TransientError(self.name, f"{what}: the session ended repeatedly", 0.0)

        return c._translated(what, attempt)

    def _run_task(self, what: str, start: Callable[[], Any]) -> Any:
        """Start a task (once) and wait for it; its fault becomes a `VCenterError`."""
        task = self._mutate(what, start)
        deadline = time.monotonic() + self._task_timeout
        delay = TASK_POLL[0]
        while True:
            [obj] = self.client._soap(
                f"{what}: wait for task",
                lambda: self._read_objects([task], ("info.state", "info.error", "info.result")),
            )
            state = obj.props.get("info.state")
            if state == "success":
                return obj.props.get("info.result")
            if state == "error":
                raise self._task_fault(what, obj.props.get("info.error"))
            if time.monotonic() > deadline:
                raise VCenterError(self.name, f"{what}: task {task._moId} still {state} after "
                                   f"{self._task_timeout:.0f} s")
            self.client._sleep(delay)
            delay = min(TASK_POLL[1], delay * 2)

    def _task_fault(self, what: str, fault: Any) -> VCenterError:
        name = type(fault).__name__.rsplit(".", 1)[-1] if fault is not None else "unknown fault"
        message = getattr(fault, "msg", "") or getattr(fault, "localizedMessage", "") or ""
        text = f"{what}: {name}{': ' + message if message else ''}"
        if name in BUSY_FAULTS:
            return TransientError(self.name, text, 2.0)
        return VCenterError(self.name, text)

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
        snapshot = vim.vm.Snapshot(snapshot_id, self.client._stub)
        try:
            self._run_task(
                f"remove snapshot {snapshot_id} of VM {vm.name!r}",
                lambda: snapshot.RemoveSnapshot_Task(removeChildren=False, consolidate=True),
            )
        except VCenterError as exc:
            if "ManagedObjectNotFound" not in exc.message:
                raise
            return  # already gone: the goal holds
        [obj] = self.client._soap(
            "read consolidation state",
            lambda: self._read_objects([self._vm_ref(vm)], ("runtime.consolidationNeeded",)),
        )
        if obj.props.get("runtime.consolidationNeeded"):
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
            if "InvalidPowerState" not in exc.message:
                raise  # already in the wanted state otherwise: the goal holds

    # ------------------------------------------------------------------ disks

    def snapshot_disks(self, vm: VM, snapshot_id: str) -> tuple[Disk, ...]:
        snapshot = vim.vm.Snapshot(snapshot_id, self.client._stub)
        [obj] = self.client._soap(
            f"read the disks of snapshot {snapshot_id}",
            lambda: self._read_objects([snapshot], ("config.hardware.device",)),
        )
        return disks_of(obj.props.get("config.hardware.device"))

    def _file(self, vm: VM, datastore_path: str, datacenter: str | None = None) -> DatastoreFile:
        datastore, path = parse_datastore_path(datastore_path)
        endpoint = self.client._endpoint
        return DatastoreFile(self.name, endpoint.host, endpoint.port,
                             datacenter or self._datacenter_of(vm), datastore, path)

    def _connect(self, host: str, port: int) -> http.client.HTTPConnection:
        return self.client._connection(host, port)

    def _cookie(self) -> str:
        self.client._soap("log in", lambda: None)
        return str(self.client._stub.cookie)

    def open_disk(self, vm: VM, snapshot_id: str, disk: Disk) -> DiskStream:
        """A frozen disk's bytes: through an NFC export lease (`ExportVm`) when the VM is
        powered off, else the snapshot's base extent over the datastore HTTP interface."""
        [obj] = self.client._soap(
            f"read the power state of VM {vm.name!r}",
            lambda: self._read_objects([self._vm_ref(vm)],
                                       ("runtime.powerState", "config.hardware.device")),
        )
        if obj.props.get("runtime.powerState") == "poweredOff":
            return self._open_nfc(vm, disk, obj.props.get("config.hardware.device"))
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
        reader = RangeReader(extent, self._connect, self._cookie(), sleep=self.client._sleep)
        return self._sized(reader, disk)

    def _sized(self, reader: RangeReader, disk: Disk) -> ZeroExtended:
        """The download read as exactly the disk's capacity (unwritten tails read as zeros)."""
        if reader.size > disk.capacity_bytes:
            reader.close()
            raise VCenterError(self.name, f"{reader.file} holds {reader.size} bytes, more than "
                               f"the disk's capacity of {disk.capacity_bytes}")
        if reader.size < disk.capacity_bytes:
            log.warning("vCenter %r: %s holds %d of %d bytes; the rest reads as zeros "
                        "(unwritten)", self.name, reader.file, reader.size, disk.capacity_bytes)
        return ZeroExtended(reader, disk.capacity_bytes)

    def _open_nfc(self, vm: VM, disk: Disk, devices: Any) -> DiskStream:
        what = f"NFC export of {disk.label} of VM {vm.name!r}"
        ref = self._vm_ref(vm)
        lease = self._mutate(what, ref.ExportVm)
        try:
            urls = self._lease_ready(what, lease)
            keys = [d.key for d in disks_of(devices)]
            device = device_for(
                [NfcDevice(str(u.key), str(u.url), int(u.fileSize) if u.fileSize else None,
                           bool(u.disk)) for u in urls],
                disk_slots(devices).get(disk.key),
                keys.index(disk.key) if disk.key in keys else -1,
                self.name,
                what,
            )
            endpoint = self.client._endpoint
            file = download_file(device, self.name, endpoint.host, endpoint.port,
                                 f"{what} ({device.key})")
            stream = open_disk_download(file, self._connect, self._cookie(),
                                        disk.capacity_bytes)
        except BaseException:
            self._end_lease(what, lease, abort=True)
            raise
        return LeasedStream(
            stream,
            disk.capacity_bytes,
            progress=lambda percent: self.client._soap(
                f"{what}: report progress", lambda: lease.HttpNfcLeaseProgress(percent=percent)),
            complete=lambda: self._end_lease(what, lease, abort=False),
            abort=lambda: self._end_lease(what, lease, abort=True),
        )

    def _lease_ready(self, what: str, lease: Any) -> list[Any]:
        """Wait for an NFC lease to be ready; its device URLs."""
        deadline = time.monotonic() + LEASE_READY_TIMEOUT
        delay = TASK_POLL[0]
        while True:
            [obj] = self.client._soap(
                f"{what}: wait for the lease",
                lambda: self._read_objects([lease], ("state", "error", "info")),
            )
            state = obj.props.get("state")
            if state == "ready":
                info = obj.props.get("info")
                return list(getattr(info, "deviceUrl", None) or ())
            if state == "error":
                raise self._task_fault(what, obj.props.get("error"))
            if state == "done" or time.monotonic() > deadline:
                raise VCenterError(self.name, f"{what}: lease {lease._moId} is {state}, "
                                   "not ready")
            self.client._sleep(delay)
            delay = min(TASK_POLL[1], delay * 2)

    def _end_lease(self, what: str, lease: Any, *, abort: bool) -> None:
        try:
            if abort:
                self._mutate(f"{what}: abort the lease", lambda: lease.HttpNfcLeaseAbort())
            else:
                self._mutate(f"{what}: complete the lease", lambda: lease.HttpNfcLeaseComplete())
        except VCenterError as exc:
            log.warning("%s (the lease times out by itself)", exc)

    def changed_extents(
        self, vm: VM, snapshot_id: str, disk: Disk, since_change_id: str
    ) -> list[tuple[int, int]] | None:
        ref = self._vm_ref(vm)
        snapshot = vim.vm.Snapshot(snapshot_id, self.client._stub)
        extents: list[tuple[int, int]] = []
        offset = 0
        while offset < disk.capacity_bytes:
            try:
                info = self.client._soap(
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
        """The VM's .vmx and .nvram (what a restore needs besides the disks)."""
        def read_paths() -> str:
            [obj] = self._read_objects([self._vm_ref(vm)], ("config.files.vmPathName",))
            return str(obj.props.get("config.files.vmPathName") or "")

        vmx = self.client._soap(f"read the files of VM {vm.name!r}", read_paths)
        if not vmx:
            return {}
        datacenter = self._datacenter_of(vm)
        files: dict[str, bytes] = {}
        for path in (vmx, vmx[: -len(".vmx")] + ".nvram" if vmx.endswith(".vmx") else ""):
            if not path:
                continue
            try:
                with RangeReader(self._file(vm, path, datacenter), self._connect,
                                 self._cookie(), attempts=3, sleep=self.client._sleep) as r:
                    files[path.rsplit("/", 1)[-1]] = r.read()
            except VCenterError as exc:
                if "does not exist" not in exc.message:
                    raise
        return files


class VCenterPool:
    """One `VSphereClient` per vCenter and thread, for the executor's thread pool."""

    def __init__(self, configs: Mapping[str, VCenterConfig],
                 passwords: Mapping[str, str]) -> None:
        self._configs = dict(configs)
        self._passwords = dict(passwords)
        self._local = threading.local()
        self._clients: list[VSphereClient] = []
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: HostConfig,
                   resolve_password: Callable[[VCenterConfig], str]) -> VCenterPool:
        return cls(config.vcenters,
                   {name: resolve_password(vc) for name, vc in config.vcenters.items()})

    def operations(self, name: str) -> VSphereOperations:
        ops: dict[str, VSphereOperations] = getattr(self._local, "ops", None) or {}
        self._local.ops = ops
        if name not in ops:
            client = VSphereClient(self._configs[name], self._passwords[name])
            with self._lock:
                self._clients.append(client)
            ops[name] = VSphereOperations(client)
        return ops[name]

    def ops(self) -> dict[str, Any]:
        """`VCenterOps` per vCenter name; each call is routed to the calling thread's client."""
        return {name: _ThreadRouted(self, name) for name in sorted(self._configs)}

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

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
