"""vSphere tags through the vCenter REST API (`/rest/com/vmware/cis/tagging/...`).

Tags are not in the SOAP API. The number of requests grows with the number of tags and
categories, never with the number of VMs: one login, one tag list, one read per tag and per
category in use, one association query for all tags, one logout.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from reconciler.errors import TagsUnavailable

__all__ = ["TagsUnavailable", "read_vm_tags"]

log = logging.getLogger(__name__)

SESSION_HEADER = "vmware-api-session-id"


def read_vm_tags(
    connect: Callable[[], http.client.HTTPSConnection],
    username: str,
    password: str,
    base_path: str = "/rest",
) -> dict[str, tuple[str, ...]]:
    """VM id ("vm-42") → sorted "category/tag" names, for every tagged VM.

    Raises `TagsUnavailable` when the API is missing (404) or refuses the login (401/403);
    connection errors (OSError, http.client.HTTPException) propagate for the caller to
    classify.
    """
    conn = connect()
    try:
        api = _Api(conn, base_path)
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        token = api.call("POST", "/com/vmware/cis/session", auth=f"Basic {basic}")
        if not isinstance(token, str):
            raise TagsUnavailable("the REST login returned no session id")
        api.session = token
        try:
            return _associations(api)
        finally:
            try:
                api.call("DELETE", "/com/vmware/cis/session")
            except (OSError, http.client.HTTPException, TagsUnavailable) as exc:
                log.debug("REST logout failed: %s", exc)
    finally:
        conn.close()


def _associations(api: _Api) -> dict[str, tuple[str, ...]]:
    tag_ids = api.call("GET", "/com/vmware/cis/tagging/tag") or []
    if not tag_ids:
        return {}
    names: dict[str, str] = {}
    categories: dict[str, str] = {}
    for tag_id in tag_ids:
        tag = api.call("GET", f"/com/vmware/cis/tagging/tag/id:{quote(tag_id, safe=':')}")
        category_id = tag.get("category_id", "")
        if category_id not in categories:
            category = api.call(
                "GET", f"/com/vmware/cis/tagging/category/id:{quote(category_id, safe=':')}"
            )
            categories[category_id] = str(category.get("name", category_id))
        names[tag_id] = f"{categories[category_id]}/{tag.get('name', tag_id)}"
    attached = api.call(
        "POST",
        "/com/vmware/cis/tagging/tag-association?~action=list-attached-objects-on-tags",
        body={"tag_ids": tag_ids},
    )
    result: dict[str, set[str]] = defaultdict(set)
    for entry in attached or []:
        for obj in entry.get("object_ids") or []:
            if obj.get("type") == "VirtualMachine" and entry.get("tag_id") in names:
                result[str(obj.get("id"))].add(names[entry["tag_id"]])
    return {vm: tuple(sorted(tags)) for vm, tags in result.items()}


class _Api:
    def __init__(self, conn: http.client.HTTPSConnection, base_path: str) -> None:
        self.conn = conn
        self.base = base_path.rstrip("/")
        self.session = ""

    def call(self, method: str, path: str, *, body: Any = None, auth: str = "") -> Any:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = auth
        if self.session:
            headers[SESSION_HEADER] = self.session
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, self.base + path, body=data, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        if response.status in (401, 403, 404):
            raise TagsUnavailable(f"{method} {self.base}{path}: HTTP {response.status}")
        if response.status >= 500:
            raise http.client.HTTPException(f"{response.status} {response.reason}")
        if response.status >= 300:
            raise TagsUnavailable(f"{method} {self.base}{path}: HTTP {response.status}")
        if not payload:
            return None
        try:
            return json.loads(payload).get("value")
        except (ValueError, AttributeError) as exc:
            raise TagsUnavailable(f"{method} {self.base}{path}: not JSON ({exc})") from None
