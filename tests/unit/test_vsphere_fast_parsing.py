"""The SOAP page reader's pure parts: device cutting, tokens, times, faults in missingSet, and
the update sets of WaitForUpdatesEx (the watch cache)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from reconciler.adapters.vsphere_fast import (
    Missing,
    Ref,
    parse_page,
    parse_time,
    parse_updates,
    strip_devices,
    token_of,
)

XSI = 'xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance"'


def envelope(returnval: str | None, method: str = "RetrievePropertiesEx") -> bytes:
    inner = "" if returnval is None else f"<returnval>{returnval}</returnval>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        f'<{method}Response xmlns="urn:vim25">{inner}</{method}Response></soapenv:Body>'
        "</soapenv:Envelope>"
    ).encode()


DEVICES = (
    '<propSet><name>config.hardware.device</name><val xsi:type="ArrayOfVirtualDevice">'
    '<VirtualDevice xsi:type="VirtualIDEController"><key>200</key><device>3000</device>'
    "<busNumber>0</busNumber></VirtualDevice>"
    '<VirtualDevice xsi:type="VirtualDisk"><key>2000</key>'
    '<deviceInfo xsi:type="Description"><label>Hard disk 1</label><summary>x</summary>'
    '</deviceInfo><backing xsi:type="VirtualDiskFlatVer2BackingInfo">'
    "<fileName>[ds] vm/vm.vmdk</fileName><changeId>52 a/3</changeId>"
    '<parent xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds] vm/base.vmdk</fileName>'
    "</parent></backing><capacityInKB>1024</capacityInKB></VirtualDevice>"
    '<VirtualDevice xsi:type="VirtualE1000"><key>4000</key><deviceInfo><label>'
    "&lt;/VirtualDevice&gt;</label></deviceInfo></VirtualDevice>"
    "</val></propSet>"
)

#: The device list's `<val>` alone, as a property change carries it.
DEVICE_VALUE = DEVICES.removeprefix("<propSet><name>config.hardware.device</name>").removesuffix(
    "</propSet>")


def test_only_virtual_disks_are_kept_of_a_device_list_and_read_like_pyvmomi_objects() -> None:
    page = parse_page(envelope(
        f'<objects><obj type="VirtualMachine">vm-1</obj>{DEVICES}'
        '<propSet><name>name</name><val xsi:type="xsd:string">a &amp; &lt;b&gt;</val></propSet>'
        '<propSet><name>runtime.host</name><val xsi:type="ManagedObjectReference" '
        'type="HostSystem">host-9</val></propSet></objects>'))
    (vm,) = page.objects
    assert (vm.kind, vm.id) == ("VirtualMachine", "vm-1")
    assert vm.props["name"] == "a & <b>"
    assert vm.props["runtime.host"] == Ref("HostSystem", "host-9")
    (disk,) = vm.props["config.hardware.device"]
    assert disk.key == 2000 and disk.capacityInKB == 1024 and disk.capacityInBytes is None
    assert disk.deviceInfo.label == "Hard disk 1"
    assert disk.backing.fileName == "[ds] vm/vm.vmdk" and disk.backing.changeId == "52 a/3"
    assert disk.backing.parent.fileName == "[ds] vm/base.vmdk"
    assert b"VirtualIDEController" not in strip_devices(envelope(DEVICES))
    assert b"VirtualDisk\"" in strip_devices(envelope(DEVICES))


def test_a_self_closing_device_does_not_swallow_the_disk_after_it() -> None:
    body = envelope('<val xsi:type="ArrayOfVirtualDevice"><VirtualDevice xsi:type="VirtualX"/>'
                    '<VirtualDevice xsi:type="VirtualDisk"><key>1</key></VirtualDevice></val>')
    assert b"<key>1</key>" in strip_devices(body)


def test_the_continuation_token_is_found_before_parsing_and_missing_faults_are_named() -> None:
    body = envelope(
        '<token>page-7</token><objects><obj type="Folder">group-d1</obj><missingSet>'
        '<path>name</path><fault><fault xsi:type="NotAuthenticated"><object '
        'type="Folder">group-d1</object><privilegeId>System.View</privilegeId></fault>'
        "<localizedMessage></localizedMessage></fault></missingSet></objects>")
    assert token_of(body) == "page-7"
    page = parse_page(body)
    assert page.token == "page-7"
    (missing,) = page.missing
    assert (missing.kind, missing.id, missing.path, missing.fault) == (
        "Folder", "group-d1", "name", "NotAuthenticated")
    assert token_of(envelope("<objects></objects>")) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-25T01:02:03Z", datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC)),
    ("2026-11-25T01:02:03.123456789Z", datetime(2026, 11, 25, 1, 2, 3, 123456, tzinfo=UTC)),
    ("2026-11-25T01:02:03.5+01:30",
     datetime(2026, 11, 25, 1, 2, 3, 500000, tzinfo=timezone(timedelta(hours=1, minutes=30)))),
    ("2026-11-25T01:02:03", datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC)),
])
def test_times_are_read_as_pyvmomi_reads_them(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_a_page_that_is_not_xml_is_a_parse_error() -> None:
    import xml.etree.ElementTree as ElementTree

    with pytest.raises(ElementTree.ParseError):
        parse_page(b"<soapenv:Envelope><unclosed>")


def test_an_update_set_reads_versions_kinds_changes_and_missing_properties() -> None:
    updates = parse_updates(envelope(
        "<version>7</version><filterSet><filter type=\"PropertyFilter\">f-1</filter>"
        '<objectSet><kind>enter</kind><obj type="VirtualMachine">vm-1</obj>'
        f'<changeSet><name>config.hardware.device</name><op>assign</op>{DEVICE_VALUE}'
        "</changeSet>"
        '<changeSet><name>name</name><op>assign</op><val xsi:type="xsd:string">a</val>'
        "</changeSet><changeSet><name>snapshot</name><op>remove</op></changeSet>"
        "<missingSet><path>guest</path><fault><fault xsi:type=\"NoPermission\"/>"
        "</fault></missingSet></objectSet>"
        '<objectSet><kind>leave</kind><obj type="VirtualMachine">vm-2</obj></objectSet>'
        "</filterSet><truncated>true</truncated>", "WaitForUpdatesEx"))
    assert updates is not None
    assert (updates.version, updates.truncated, updates.gone) == ("7", True, [])
    enter, leave = updates.objects
    assert (enter.kind, enter.obj_kind, enter.id) == ("enter", "VirtualMachine", "vm-1")
    (device, op, (disk,)), name, snapshot = enter.changes
    assert (device, op, disk.key) == ("config.hardware.device", "assign", 2000)
    assert name == ("name", "assign", "a") and snapshot == ("snapshot", "remove", None)
    assert enter.missing == [Missing("VirtualMachine", "vm-1", "guest", "NoPermission")]
    assert (leave.kind, leave.id, leave.changes) == ("leave", "vm-2", [])


def test_an_update_set_names_a_watched_object_that_is_gone_and_an_empty_answer_is_none() -> None:
    updates = parse_updates(envelope(
        "<version>8</version><filterSet><filter type=\"PropertyFilter\">f-1</filter>"
        '<missingSet><obj type="ContainerView">session[1]view</obj><fault>'
        '<fault xsi:type="ManagedObjectNotFound"/></fault></missingSet></filterSet>'
        "<truncated>false</truncated>", "WaitForUpdatesEx"))
    assert updates is not None and updates.gone == ["ManagedObjectNotFound"]
    assert not updates.truncated and updates.objects == []
    assert parse_updates(envelope(None, "WaitForUpdatesEx")) is None
