/*
vmkeep patch 7 (new file): a virtual disk's data is its "-flat.vmdk" file, and the disk's
capacity and that file agree.

The stock simulator creates a disk as two empty files ("disk1.vmdk", the descriptor, and
"disk1-flat.vmdk", the data) whatever its capacity, and never looks at them again. vmkeep's
tests put data on a disk by writing the flat file over the datastore HTTP interface
(PUT /folder/VM/disk1-flat.vmdk?dcPath=DC0&dsName=LocalDS_0) and read it back through
ExportVm/NFC and changed block tracking, so here:

  - when a disk is created or edited (configureDevice), both capacityInKB and
    capacityInBytes are set, and its flat file is extended (sparse) to the capacity;
  - when a flat file is written over HTTP (ServeDatastore PUT/POST), the disk that uses it
    grows to the file's size if the file is bigger (capacityInKB/capacityInBytes, rounded up
    to whole KiB), and the file is extended with zeros to the capacity if it is smaller.

So a disk always reads as exactly capacityInBytes bytes, from the flat file, everywhere.
*/

package simulator

import (
	"io"
	"os"
	"path"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// vmkeepFlatName is the data file of a disk descriptor path: "VM/disk1.vmdk" → "VM/disk1-flat.vmdk".
func vmkeepFlatName(descriptor string) string {
	return strings.TrimSuffix(descriptor, ".vmdk") + "-flat.vmdk"
}

// vmkeepDiskCapacity is the disk's size in bytes.
func vmkeepDiskCapacity(disk *types.VirtualDisk) int64 {
	if disk.CapacityInBytes > 0 {
		return disk.CapacityInBytes
	}
	return disk.CapacityInKB * 1024
}

// vmkeepDiskDataFile is the local path of the disk's flat file ("" if the disk has no file
// backing on a datastore the VM's host sees).
func (vm *VirtualMachine) vmkeepDiskDataFile(disk *types.VirtualDisk) string {
	b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
	if !ok {
		return ""
	}
	var p object.DatastorePath
	if !p.FromString(b.GetVirtualDeviceFileBackingInfo().FileName) || vm.Runtime.Host == nil {
		return ""
	}
	host, ok := Map.Get(*vm.Runtime.Host).(*HostSystem)
	if !ok {
		return ""
	}
	ds, ok := Map.FindByName(p.Datastore, host.Datastore).(*Datastore)
	if !ok {
		return ""
	}
	return path.Join(ds.Info.GetDatastoreInfo().Url, vmkeepFlatName(p.Path))
}

// vmkeepSizeDiskFile sets both capacityInKB and capacityInBytes, as vCenter reports them,
// and extends the disk's flat file to the capacity (hook in configureDevice, vmkeep patch 7).
// Errors are ignored: the stock code created the file.
func (vm *VirtualMachine) vmkeepSizeDiskFile(disk *types.VirtualDisk) {
	if disk.CapacityInBytes == 0 {
		disk.CapacityInBytes = disk.CapacityInKB * 1024
	} else if disk.CapacityInKB == 0 {
		disk.CapacityInKB = (disk.CapacityInBytes + 1023) / 1024
	}
	file := vm.vmkeepDiskDataFile(disk)
	if file == "" {
		return
	}
	if info, err := os.Stat(file); err == nil && info.Size() < vmkeepDiskCapacity(disk) {
		_ = os.Truncate(file, vmkeepDiskCapacity(disk))
	}
}

// vmkeepDatastoreFileWritten is called after a file was written over the datastore HTTP
// interface (hook in ServeDatastore, vmkeep patch 7): a VM disk's flat file and the disk's
// capacity are made to agree, as described at the top of this file.
func vmkeepDatastoreFileWritten(ds *Datastore, relative string) {
	relative = strings.TrimPrefix(path.Clean("/"+relative), "/")
	if !strings.HasSuffix(relative, "-flat.vmdk") {
		return
	}
	var vms []types.ManagedObjectReference
	Map.WithLock(ds, func() { vms = append(vms, ds.Vm...) })
	for _, ref := range vms {
		vm, ok := Map.Get(ref).(*VirtualMachine)
		if !ok {
			continue
		}
		Map.WithLock(vm, func() {
			for _, device := range vm.Config.Hardware.Device {
				disk, ok := device.(*types.VirtualDisk)
				if !ok {
					continue
				}
				b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
				if !ok {
					continue
				}
				var p object.DatastorePath
				if !p.FromString(b.GetVirtualDeviceFileBackingInfo().FileName) ||
					p.Datastore != ds.Name || vmkeepFlatName(p.Path) != relative {
					continue
				}
				file := path.Join(ds.Info.GetDatastoreInfo().Url, relative)
				info, err := os.Stat(file)
				if err != nil {
					return
				}
				if size := info.Size(); size > vmkeepDiskCapacity(disk) {
					disk.CapacityInKB = (size + 1023) / 1024
					disk.CapacityInBytes = disk.CapacityInKB * 1024
					Map.Update(vm, []types.PropertyChange{
						{Name: "config.hardware.device", Val: vm.Config.Hardware.Device},
					})
				}
				if info.Size() < vmkeepDiskCapacity(disk) {
					_ = os.Truncate(file, vmkeepDiskCapacity(disk))
				}
			}
		})
	}
}

// vmkeepDiskReader reads a disk's data: its flat file, cut or zero-padded to exactly size
// bytes (a disk reads as its capacity, whatever happened to the file).
type vmkeepDiskReader struct {
	file *os.File
	size int64
}

func vmkeepOpenDisk(file string, size int64) (*vmkeepDiskReader, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	return &vmkeepDiskReader{file: f, size: size}, nil
}

func (d *vmkeepDiskReader) Close() error { return d.file.Close() }

// ReadAt implements io.ReaderAt over [0, size).
func (d *vmkeepDiskReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := d.size - off; int64(want) > rest {
		want = int(rest)
	}
	n, err := d.file.ReadAt(p[:want], off)
	if err != nil && err != io.EOF {
		return n, err
	}
	for i := n; i < want; i++ { // beyond the end of the file: zeros
		p[i] = 0
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}
