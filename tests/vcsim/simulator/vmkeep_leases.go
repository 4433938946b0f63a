/*
vmkeep patch 9 (new file): export leases as vCenter keeps them, ExportSnapshot, and vSAN/VVol
datastores.

Export leases (ExportVm and VirtualMachineSnapshot.ExportSnapshot) are kept in the global
registry, not the creating session's, so another session (a later run's recovery) can abort
a lease a killed run left. Every export lease is recorded for tests (GET /vmkeep/leases):
method, VM, snapshot, state (ready → done or error), how it ended (completed, aborted,
timedOut), the HttpNfcLeaseProgress calls and the last percentage. While an export lease of a
VM is ready, power operations on the VM (PowerOn/PowerOff/Suspend) fail with InvalidState, as
a held lease blocks them on vCenter. info.leaseTimeout is the nfcLeaseTimeout knob (seconds,
default 300); a lease that hears no progress for that long ends in error (Timedout) and its
URLs answer 404. Hooks: HttpNfcLeaseComplete/Abort/Progress (http_nfc_lease.go) and
powerVMTask.Run (virtual_machine.go), each marked "vmkeep patch 9".

Snapshots keep their disks' data, copy-on-write: CreateSnapshot (the patch 8 hook) records
each disk's data file; before a datastore HTTP PUT overwrites such a file (hook in
ServeDatastore), the file is copied, sparse (all-zero 64 KiB blocks are not written), outside
the datastores for every snapshot that still reads it. The stock simulator has no delta disks,
so the flat file keeps changing after a snapshot; ExportSnapshot serves each disk as it was
when the snapshot was taken: from that copy if one was made, else from the file itself.
Copies of removed snapshots are deleted at the next PUT. A change written straight into a
datastore directory (not over HTTP) is not seen. ExportSnapshot answers a ready lease like
ExportVm (vmkeep_export.go) with one deviceUrl per disk of the snapshot, on a VM in any power
state.

Datastore types: tests/vcsim/main.go's -datastore-type sets summary.type of every datastore
("vsan" or "VVOL"); such a datastore answers a GET or HEAD of a "-flat.vmdk" file over the
datastore HTTP interface with 404, as vSAN does (disks are objects, not files there); PUT stays
allowed so tests can put data on disks (hook in ServeDatastore, simulator.go). The
refuseFlatReads knob answers such reads with a chosen HTTP status on any datastore.
*/

package simulator

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// LeaseRecord is what tests can see of an export lease (GET /vmkeep/leases).
type LeaseRecord struct {
	Lease         string `json:"lease"`
	Method        string `json:"method"` // ExportVm or ExportSnapshot
	VM            string `json:"vm"`
	VMName        string `json:"vmName"`
	Snapshot      string `json:"snapshot,omitempty"`
	State         string `json:"state"`           // ready, done or error
	Ended         string `json:"ended,omitempty"` // completed, aborted or timedOut
	ProgressCalls int    `json:"progressCalls"`
	Percent       int32  `json:"percent"`
	LeaseTimeout  int32  `json:"leaseTimeout"`
	Created       string `json:"created"`
}

type vmkeepLeaseEntry struct {
	record LeaseRecord
	lease  *HttpNfcLease
	timer  *time.Timer
}

var vmkeepLeases = struct {
	sync.Mutex
	order []string
	byRef map[string]*vmkeepLeaseEntry
}{byRef: make(map[string]*vmkeepLeaseEntry)}

// Leases lists every export lease since start (or the last reset), oldest first.
func Leases() []LeaseRecord {
	vmkeepLeases.Lock()
	defer vmkeepLeases.Unlock()
	out := make([]LeaseRecord, 0, len(vmkeepLeases.order))
	for _, ref := range vmkeepLeases.order {
		out = append(out, vmkeepLeases.byRef[ref].record)
	}
	return out
}

// ResetLeases forgets ended leases (ready ones stay).
func ResetLeases() {
	vmkeepLeases.Lock()
	defer vmkeepLeases.Unlock()
	var keep []string
	for _, ref := range vmkeepLeases.order {
		if vmkeepLeases.byRef[ref].record.State == string(types.HttpNfcLeaseStateReady) {
			keep = append(keep, ref)
		} else {
			delete(vmkeepLeases.byRef, ref)
		}
	}
	vmkeepLeases.order = keep
}

// vmkeepNewExportLease makes a ready export lease of vm in the global registry.
func vmkeepNewExportLease(vm *VirtualMachine, method string, snapshot *types.ManagedObjectReference) *HttpNfcLease {
	timeout := Faults.nfcLeaseTimeout()
	lease := &HttpNfcLease{
		HttpNfcLease: mo.HttpNfcLease{
			Info: &types.HttpNfcLeaseInfo{
				Entity:       vm.Self,
				LeaseTimeout: timeout,
			},
			State: types.HttpNfcLeaseStateReady,
		},
		files: make(map[string]string),
	}
	Map.Put(lease)
	ref := lease.Reference()
	lease.Info.Lease = ref
	nfcLease.Store(ref, lease)

	entry := &vmkeepLeaseEntry{lease: lease, record: LeaseRecord{
		Lease:        ref.Value,
		Method:       method,
		VM:           vm.Self.Value,
		VMName:       vm.Name,
		State:        string(types.HttpNfcLeaseStateReady),
		LeaseTimeout: timeout,
		Created:      time.Now().UTC().Format(time.RFC3339Nano),
	}}
	if snapshot != nil {
		entry.record.Snapshot = snapshot.Value
	}
	vmkeepLeases.Lock()
	vmkeepLeases.order = append(vmkeepLeases.order, ref.Value)
	vmkeepLeases.byRef[ref.Value] = entry
	entry.timer = time.AfterFunc(time.Duration(timeout)*time.Second, func() { vmkeepLeaseTimedOut(ref) })
	vmkeepLeases.Unlock()
	return lease
}

func vmkeepLeaseTimedOut(ref types.ManagedObjectReference) {
	vmkeepLeases.Lock()
	entry, ok := vmkeepLeases.byRef[ref.Value]
	if !ok || entry.record.State != string(types.HttpNfcLeaseStateReady) {
		vmkeepLeases.Unlock()
		return
	}
	entry.record.State = string(types.HttpNfcLeaseStateError)
	entry.record.Ended = "timedOut"
	vmkeepLeases.Unlock()
	nfcLease.Delete(ref)
	fault := &types.LocalizedMethodFault{Fault: &types.Timedout{}, LocalizedMessage: "the lease timed out"}
	Map.Update(entry.lease, []types.PropertyChange{
		{Name: "state", Val: types.HttpNfcLeaseStateError},
		{Name: "error", Val: fault},
	})
}

// vmkeepLeaseEnded records HttpNfcLeaseComplete ("completed") or Abort ("aborted") of an
// export lease (hook, vmkeep patch 9); a fault when the lease has already ended. Leases of
// imports are left to the stock code (nil).
func vmkeepLeaseEnded(ref types.ManagedObjectReference, how string) *soap.Fault {
	vmkeepLeases.Lock()
	entry, ok := vmkeepLeases.byRef[ref.Value]
	if !ok {
		vmkeepLeases.Unlock()
		return nil
	}
	if entry.record.State != string(types.HttpNfcLeaseStateReady) {
		state := entry.record.State
		vmkeepLeases.Unlock()
		return Fault(fmt.Sprintf("the lease is %s", state), &types.InvalidState{})
	}
	entry.timer.Stop()
	entry.record.State = string(types.HttpNfcLeaseStateDone)
	entry.record.Ended = how
	vmkeepLeases.Unlock()
	nfcLease.Delete(ref)
	Map.Update(entry.lease, []types.PropertyChange{{Name: "state", Val: types.HttpNfcLeaseStateDone}})
	return nil
}

// vmkeepLeaseProgress records HttpNfcLeaseProgress and restarts the lease's timeout (hook,
// vmkeep patch 9); a fault when the lease has ended.
func vmkeepLeaseProgress(ref types.ManagedObjectReference, percent int32) *soap.Fault {
	vmkeepLeases.Lock()
	defer vmkeepLeases.Unlock()
	entry, ok := vmkeepLeases.byRef[ref.Value]
	if !ok {
		return nil
	}
	if entry.record.State != string(types.HttpNfcLeaseStateReady) {
		return Fault(fmt.Sprintf("the lease is %s", entry.record.State), &types.InvalidState{})
	}
	entry.record.ProgressCalls++
	entry.record.Percent = percent
	entry.timer.Reset(time.Duration(entry.record.LeaseTimeout) * time.Second)
	return nil
}

// vmkeepLeaseBlocks refuses power operations on a VM while one of its export leases is ready
// (hook in powerVMTask.Run, vmkeep patch 9).
func vmkeepLeaseBlocks(vm types.ManagedObjectReference) types.BaseMethodFault {
	vmkeepLeases.Lock()
	defer vmkeepLeases.Unlock()
	for _, entry := range vmkeepLeases.byRef {
		if entry.record.VM == vm.Value && entry.record.State == string(types.HttpNfcLeaseStateReady) {
			return &types.InvalidState{}
		}
	}
	return nil
}

// ------------------------------------------------------------------ frozen snapshot disks

// vmkeepFrozenDisk is a snapshot's disk: its data file when the snapshot was taken and, once
// that file was about to be overwritten, the copy made then.
type vmkeepFrozenDisk struct {
	source string
	size   int64
	copy   string
}

var vmkeepFrozen = struct {
	sync.Mutex
	seq   int
	disks map[*VirtualMachineSnapshot]map[int32]*vmkeepFrozenDisk
}{disks: make(map[*VirtualMachineSnapshot]map[int32]*vmkeepFrozenDisk)}

// vmkeepFreezeDisks records the data files of the snapshot's disks (called from
// vmkeepSnapshotTaken, before the snapshot is registered). Nothing is copied yet: the copy
// is made when a file is about to be overwritten (vmkeepBeforeDatastoreWrite).
func (vm *VirtualMachine) vmkeepFreezeDisks(s *VirtualMachineSnapshot) {
	disks := make(map[int32]*vmkeepFrozenDisk)
	for _, device := range s.Config.Hardware.Device {
		if disk, ok := device.(*types.VirtualDisk); ok {
			if source := vm.vmkeepDiskDataFile(disk); source != "" {
				disks[disk.Key] = &vmkeepFrozenDisk{source: source, size: vmkeepDiskCapacity(disk)}
			}
		}
	}
	vmkeepFrozen.Lock()
	defer vmkeepFrozen.Unlock()
	vmkeepFrozen.disks[s] = disks
}

// vmkeepBeforeDatastoreWrite copies a disk's data file for the snapshots that still read it,
// before a datastore HTTP PUT overwrites it (hook in ServeDatastore, vmkeep patch 9).
func vmkeepBeforeDatastoreWrite(file string) {
	vmkeepFrozen.Lock()
	defer vmkeepFrozen.Unlock()
	for snapshot, disks := range vmkeepFrozen.disks {
		if snapshot.Self.Value != "" && Map.Get(snapshot.Self) == nil { // the snapshot is gone
			for _, disk := range disks {
				if disk.copy != "" {
					_ = os.Remove(disk.copy)
				}
			}
			delete(vmkeepFrozen.disks, snapshot)
			continue
		}
		for key, disk := range disks {
			if disk.source != file || disk.copy != "" {
				continue
			}
			dir := filepath.Join(os.TempDir(), "vmkeep-frozen-disks")
			_ = os.MkdirAll(dir, 0o700)
			vmkeepFrozen.seq++
			target := filepath.Join(dir, fmt.Sprintf("%d-%d.raw", vmkeepFrozen.seq, key))
			if err := vmkeepSparseCopy(disk.source, target, disk.size); err != nil {
				log.Printf("freezing %s for a snapshot: %s", disk.source, err)
				continue
			}
			disk.copy = target
		}
	}
}

// vmkeepSparseCopy copies size bytes of a disk's data, leaving all-zero blocks as holes.
func vmkeepSparseCopy(source, target string, size int64) error {
	in, err := vmkeepOpenDisk(source, size)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(target)
	if err != nil {
		return err
	}
	buf := make([]byte, vmkeepBlockSize)
	zeros := make([]byte, vmkeepBlockSize)
	for off := int64(0); off < size; off += vmkeepBlockSize {
		n, err := in.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			_ = out.Close()
			return err
		}
		if n > 0 && !bytes.Equal(buf[:n], zeros[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				_ = out.Close()
				return err
			}
		}
	}
	if err := out.Truncate(size); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// ExportSnapshot answers a ready NFC lease whose URLs serve the snapshot's disks as they were
// when it was taken (see the top of this file and of vmkeep_export.go).
func (s *VirtualMachineSnapshot) ExportSnapshot(ctx *Context, req *types.ExportSnapshot) soap.HasFault {
	body := new(methods.ExportSnapshotBody)
	vm, ok := Map.Get(s.Vm).(*VirtualMachine)
	if !ok {
		body.Fault_ = Fault("", &types.ManagedObjectNotFound{Obj: s.Vm})
		return body
	}
	ref := s.Self
	lease := vmkeepNewExportLease(vm, "ExportSnapshot", &ref)
	vmkeepFrozen.Lock()
	files := make(map[int32]string)
	for key, disk := range vmkeepFrozen.disks[s] {
		files[key] = disk.source
		if disk.copy != "" {
			files[key] = disk.copy
		}
	}
	vmkeepFrozen.Unlock()
	vm.vmkeepFillExportLease(lease, object.VirtualDeviceList(s.Config.Hardware.Device), func(disk *types.VirtualDisk) string {
		if file, ok := files[disk.Key]; ok {
			return file
		}
		return vm.vmkeepDiskDataFile(disk)
	})
	body.Res = &types.ExportSnapshotResponse{Returnval: lease.Reference()}
	return body
}

// ------------------------------------------------------------------ datastore types

// vmkeepRefuseFlatRead answers a GET/HEAD of a "-flat.vmdk" file on a vSAN or VVol datastore
// with 404 (hook in ServeDatastore, vmkeep patch 9); true when it answered.
func vmkeepRefuseFlatRead(ds *Datastore, w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if !strings.HasSuffix(r.URL.Path, "-flat.vmdk") {
		return false
	}
	if status := Faults.refuseFlatReads(); status != 0 { // the refuseFlatReads knob
		http.Error(w, http.StatusText(status), status)
		return true
	}
	kind := ""
	Map.WithLock(ds, func() { kind = ds.Summary.Type })
	if kind != "vsan" && kind != "VVOL" {
		return false
	}
	http.Error(w, fmt.Sprintf("%s datastore %s: no such file", kind, ds.Name), http.StatusNotFound)
	return true
}

// SetDatastoreType makes every datastore report summary.type kind ("vsan", "VVOL"); "" keeps
// what the model made (tests/vcsim/main.go, -datastore-type).
func SetDatastoreType(kind string) []string {
	var names []string
	if kind == "" {
		return names
	}
	for _, obj := range Map.All("Datastore") {
		ds, ok := obj.(*Datastore)
		if !ok {
			continue
		}
		Map.WithLock(ds, func() { ds.Summary.Type = kind })
		Map.Update(ds, []types.PropertyChange{{Name: "summary.type", Val: kind}})
		names = append(names, ds.Name)
	}
	sort.Strings(names)
	return names
}

// SetToolsRunning makes every VM report running, current VMware Tools (guest.toolsStatus,
// toolsRunningStatus, toolsVersionStatus2), so quiesced snapshots can be asked for
// (tests/vcsim/main.go, -tools-running). The simulator never runs Tools by itself.
func SetToolsRunning() int {
	n := 0
	for _, obj := range Map.All("VirtualMachine") {
		vm, ok := obj.(*VirtualMachine)
		if !ok {
			continue
		}
		Map.Update(vm, []types.PropertyChange{
			{Name: "guest.toolsStatus", Val: types.VirtualMachineToolsStatusToolsOk},
			{Name: "guest.toolsRunningStatus", Val: string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)},
			{Name: "guest.toolsVersionStatus2", Val: string(types.VirtualMachineToolsVersionStatusGuestToolsCurrent)},
		})
		n++
	}
	return n
}
