"""Review of `vmkeep run`, `status` and `restore`: the pure parts (metrics text, .vmx rewrite)."""

from __future__ import annotations

from reconciler.controller import Metrics
from reconciler.restore import point_vmx_at


def test_metric_values_are_written_exactly_not_rounded_to_six_digits() -> None:
    metrics = Metrics(last_started=1764034212.75, last_seconds=3.5, last_success=True,
                      last_success_time=1764034212.0)
    metrics.reconciles["ok"] = 1234567
    lines = metrics.render().splitlines()
    assert "vmkeep_last_reconcile_timestamp_seconds 1764034212.75" in lines
    assert "vmkeep_last_success_timestamp_seconds 1764034212" in lines
    assert 'vmkeep_reconciles_total{result="ok"} 1234567' in lines
    assert "vmkeep_last_reconcile_duration_seconds 3.5" in lines


def test_the_vmx_finds_a_disk_exported_from_a_snapshot_chain() -> None:
    # The VM had a snapshot of its own: at export time its disk file was the delta
    # vm1-000001.vmdk (restored under that name), and the .vmx, read while the export's
    # snapshot existed, names the next delta.
    vmx, changes = point_vmx_at(b'scsi0:0.fileName = "vm1-000002.vmdk"\n',
                                ["vm1-000001.vmdk"])
    assert vmx == b'scsi0:0.fileName = "vm1-000001.vmdk"\n'
    assert changes == ["scsi0:0.fileName vm1-000002.vmdk -> vm1-000001.vmdk"]
