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
  Tags come from the REST tagging API (`vsphere_tags`) when the vCenter serves it.

A client is meant for one thread at a time; use one client per worker thread.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from pyVmomi import SoapStubAdapter, vim, vmodl
from pyVmomi.VmomiSupport import GetServiceVersions, versionIdMap

from reconciler.adapters.retry import RetryPolicy, call_with_retries
from reconciler.adapters.vsphere_inventory import (
    CONTAINER_PROPERTIES,
    HOST_PROPERTIES,
    VM_PROPERTIES,
    RawObject,
    build_inventory,
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
from reconciler.model import Inventory, VCenterConfig

__all__ = ["VSphereClient"]

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
        """One RetrievePropertiesEx and its continuation pages."""
        collector = self._content.propertyCollector
        objects: list[RawObject] = []
        fields: list[Any] = []
        result = collector.RetrievePropertiesEx(
            specSet=[spec], options=PC.RetrieveOptions(maxObjects=self._page_size)
        )
        token = None
        try:
            while result is not None:
                token = result.token
                for content in result.objects:
                    obj = self._raw_object(content, view)
                    if obj.kind == "CustomFieldsManager":
                        fields = list(obj.props.get("field") or [])
                    else:
                        objects.append(obj)
                if not token:
                    break
                result = collector.ContinueRetrievePropertiesEx(token=token)
            token = None
        except _SessionLost:
            token = None  # the token died with the session
            raise
        finally:
            if token:  # stopped half-way for another reason than a lost session
                try:
                    collector.CancelRetrievePropertiesEx(token=token)
                except Exception as exc:
                    log.debug("vCenter %r: CancelRetrievePropertiesEx failed: %s", self.name, exc)
        return objects, fields

    def _raw_object(self, content: Any, view: Any) -> RawObject:
        obj = content.obj
        for missing in content.missingSet or ():
            if isinstance(missing.fault, vim.fault.NotAuthenticated):
                # An expired session: no exception, every property reported missing.
                raise _SessionLost(f"{obj._moId}: {missing.path} not readable without a session")
            if obj._moId == view._moId:
                raise _SessionLost(f"the ContainerView is gone: {type(missing.fault).__name__}")
            log.warning(
                "vCenter %r: %s %s: property %s not read: %s",
                self.name, obj._wsdlName, obj._moId, missing.path,
                type(missing.fault).__name__,
            )
        props = {p.name: p.val for p in content.propSet or ()}
        return RawObject(obj._wsdlName, obj._moId, props)

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
            return VCenterError(name, f"{what}: {fault}{': ' + message if message else ''}")
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
