/*
vmkeep patch 8 (new file): snapshots freeze their disks' device state, and changed block
tracking (QueryChangedDiskAreas).

Every CreateSnapshot gives the snapshot its own copy of the VM's disk devices
(snapshot.config.hardware.device): the stock code shared the device objects with the VM, so
a later change of the VM's disks (capacity, changeId) showed in its snapshots too.

When config.changeTrackingEnabled is true (set it with ReconfigVM_Task), each CreateSnapshot
records, for every disk, a hash of each 64 KiB block of the disk's data (its flat file, as
big as the disk, vmkeep_disks.go) under a new changeId ("52 a1 … 3f-… 9c/3": the disk's
tracking id and a sequence number, opaque to clients). The changeId is set on the disk
backing (VirtualDiskFlatVer2BackingInfo.changeId) in the snapshot's config and on the VM's
current disk.

QueryChangedDiskAreas(snapshot, deviceKey, startOffset, changeId) compares the blocks
recorded for the snapshot's disk with those recorded under changeId and answers
DiskChangeInfo{startOffset, length: capacity - startOffset, changedArea: [{start, length}]}:
the changed 64 KiB blocks from startOffset to the end of the disk, adjacent ones merged (all
in one answer; a client should still loop while startOffset+length < capacity, as vCenter may
answer a part). changeId "*" answers every block that is not all zeros. Without a snapshot,
the VM's disk as it is now is compared. Faults: FileFault when tracking is off, the changeId
is unknown (or of another disk) or the snapshot was taken without tracking; InvalidArgument
for a deviceKey that is not a disk or a startOffset outside the disk.
*/

package simulator

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"sync"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const vmkeepBlockSize = 64 * 1024

// vmkeepBlocks is what changed block tracking recorded of one disk at one point.
type vmkeepBlocks struct {
	vm     types.ManagedObjectReference
	disk   int32
	size   int64
	hashes [][sha256.Size]byte // per 64 KiB block, the last one zero-padded
	zero   []bool              // the block is all zeros
}

var vmkeepCBT = struct {
	sync.Mutex
	records map[string]*vmkeepBlocks // by changeId
	disks   map[string]string        // "vm-42/2000" → the disk's tracking id
	seq     map[string]int           // by tracking id: the last sequence number
}{
	records: make(map[string]*vmkeepBlocks),
	disks:   make(map[string]string),
	seq:     make(map[string]int),
}

// vmkeepHashDisk reads a disk's data block by block.
func vmkeepHashDisk(vm types.ManagedObjectReference, key int32, file string, size int64) (*vmkeepBlocks, error) {
	disk, err := vmkeepOpenDisk(file, size)
	if err != nil {
		return nil, err
	}
	defer disk.Close()
	blocks := &vmkeepBlocks{vm: vm, disk: key, size: size}
	buf := make([]byte, vmkeepBlockSize)
	zeros := make([]byte, vmkeepBlockSize)
	for off := int64(0); off < size; off += vmkeepBlockSize {
		n, err := disk.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			return nil, err
		}
		copy(buf[n:], zeros[n:])
		blocks.hashes = append(blocks.hashes, sha256.Sum256(buf))
		blocks.zero = append(blocks.zero, bytes.Equal(buf, zeros))
	}
	return blocks, nil
}

// vmkeepNewChangeId names a new point of the disk's tracking: "<tracking id>/<sequence>".
func vmkeepNewChangeId(vm types.ManagedObjectReference, key int32) string {
	disk := fmt.Sprintf("%s/%d", vm.Value, key)
	id, ok := vmkeepCBT.disks[disk]
	if !ok {
		var b [16]byte
		_, _ = rand.Read(b[:])
		b[0] = 0x52 // like vCenter's ids
		id = fmt.Sprintf("% x-% x", b[:8], b[8:])
		vmkeepCBT.disks[disk] = id
	}
	vmkeepCBT.seq[id]++
	return fmt.Sprintf("%s/%d", id, vmkeepCBT.seq[id])
}

func vmkeepChangeTracking(vm *VirtualMachine) bool {
	return vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
}

// vmkeepSnapshotTaken runs in CreateSnapshot once the snapshot has a copy of the VM's config
// (hook, vmkeep patch 8): it copies the disk devices, then records changed block tracking.
func (vm *VirtualMachine) vmkeepSnapshotTaken(s *VirtualMachineSnapshot) {
	devices := make([]types.BaseVirtualDevice, len(s.Config.Hardware.Device))
	for i, device := range s.Config.Hardware.Device {
		devices[i] = device
		if disk, ok := device.(*types.VirtualDisk); ok {
			frozen := *disk
			if b, ok := frozen.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
				backing := *b
				frozen.Backing = &backing
			}
			devices[i] = &frozen
		}
	}
	s.Config.Hardware.Device = devices
	vm.vmkeepFreezeDisks(s) // vmkeep_leases.go: what ExportSnapshot serves
	if !vmkeepChangeTracking(vm) {
		return
	}

	changed := false
	for _, device := range devices {
		disk, ok := device.(*types.VirtualDisk)
		if !ok {
			continue
		}
		frozen, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		blocks, err := vmkeepHashDisk(vm.Self, disk.Key, vm.vmkeepDiskDataFile(disk), vmkeepDiskCapacity(disk))
		if err != nil {
			vm.logPrintf("changed block tracking: disk %d: %s", disk.Key, err)
			continue
		}
		vmkeepCBT.Lock()
		id := vmkeepNewChangeId(vm.Self, disk.Key)
		vmkeepCBT.records[id] = blocks
		vmkeepCBT.Unlock()
		frozen.ChangeId = id
		for _, current := range vm.Config.Hardware.Device {
			if d, ok := current.(*types.VirtualDisk); ok && d.Key == disk.Key {
				if b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
					b.ChangeId = id
					changed = true
				}
			}
		}
	}
	if changed {
		Map.Update(vm, []types.PropertyChange{
			{Name: "config.hardware.device", Val: vm.Config.Hardware.Device},
		})
	}
}

// QueryChangedDiskAreas answers the blocks of a disk changed since changeId (see the top).
func (vm *VirtualMachine) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	body := new(methods.QueryChangedDiskAreasBody)
	fail := func(fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = Fault("", fault)
		return body
	}

	devices := vm.Config.Hardware.Device
	if req.Snapshot != nil {
		s, ok := Map.Get(*req.Snapshot).(*VirtualMachineSnapshot)
		if !ok || s.Vm != vm.Self {
			return fail(&types.ManagedObjectNotFound{Obj: *req.Snapshot})
		}
		devices = s.Config.Hardware.Device
	}
	var disk *types.VirtualDisk
	for _, device := range devices {
		if d, ok := device.(*types.VirtualDisk); ok && d.Key == req.DeviceKey {
			disk = d
		}
	}
	if disk == nil {
		return fail(&types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	backing, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return fail(&types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	fileFault := &types.FileFault{File: backing.FileName}
	if !vmkeepChangeTracking(vm) {
		return fail(fileFault)
	}

	var current *vmkeepBlocks
	if req.Snapshot != nil {
		vmkeepCBT.Lock()
		current = vmkeepCBT.records[backing.ChangeId]
		vmkeepCBT.Unlock()
		if backing.ChangeId == "" || current == nil {
			return fail(fileFault) // the snapshot was taken without changed block tracking
		}
	} else {
		blocks, err := vmkeepHashDisk(vm.Self, disk.Key, vm.vmkeepDiskDataFile(disk), vmkeepDiskCapacity(disk))
		if err != nil {
			return fail(fileFault)
		}
		current = blocks
	}
	if req.StartOffset < 0 || req.StartOffset >= current.size {
		return fail(&types.InvalidArgument{InvalidProperty: "startOffset"})
	}

	changed := func(i int) bool { return !current.zero[i] }
	if req.ChangeId != "*" {
		vmkeepCBT.Lock()
		since := vmkeepCBT.records[req.ChangeId]
		vmkeepCBT.Unlock()
		if since == nil || since.vm != vm.Self || since.disk != disk.Key {
			return fail(fileFault)
		}
		changed = func(i int) bool { return i >= len(since.hashes) || since.hashes[i] != current.hashes[i] }
	}

	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: current.size - req.StartOffset}
	for i := int(req.StartOffset / vmkeepBlockSize); i < len(current.hashes); i++ {
		if !changed(i) {
			continue
		}
		start := int64(i) * vmkeepBlockSize
		if start < req.StartOffset {
			start = req.StartOffset
		}
		end := int64(i+1) * vmkeepBlockSize
		if end > current.size {
			end = current.size
		}
		if n := len(info.ChangedArea); n > 0 && info.ChangedArea[n-1].Start+info.ChangedArea[n-1].Length == start {
			info.ChangedArea[n-1].Length += end - start
			continue
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: start, Length: end - start})
	}

	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}
