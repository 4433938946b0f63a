// vmkeep patch 6 (new file): VirtualMachine.ExportVm and NFC downloads.
//
// ExportVm on a powered-off VM answers a ready HttpNfcLease whose info.deviceUrl has one entry
// per virtual disk:
//
//	key, importKey  "/vm-42/ParaVirtualSCSIController0:0" (controller type, bus, unit)
//	url             "https://*/nfc/<ticket>/disk-0.vmdk" ("*": the client puts in the host;
//	                the ticket is a random id of the lease, "52…")
//	targetId        "disk-0.vmdk"
//	disk            true
//	fileSize        the disk's capacity in bytes: exactly what the URL serves
//
// With the nfcFormat knob set to "streamOptimized" (vmkeep_faults.go) a GET streams the disk
// as a streamOptimized VMDK instead, as vCenter does, and ignores Range (vmkeep_vmdk.go).
//
// A GET of the URL (with the session cookie of any live SOAP session) streams the disk's data,
// its "-flat.vmdk" file cut or zero-padded to the capacity (vmkeep_disks.go), and honours Range
// (206). Simplification: a real vCenter serves a streamOptimized VMDK here; the simulator serves
// the raw disk bytes. A powered-on VM is refused with InvalidPowerState, like vCenter does.
// HttpNfcLeaseComplete/Abort end the lease; its URLs then answer 404.
//
// The stock ServeNFC crashed on GET (nil writer); its one-line hook (vmkeep patch 6 in
// http_nfc_lease.go) hands GET and HEAD to vmkeepServeNFC.

package simulator

import (
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// vmkeepExportFile is one download of an export lease.
type vmkeepExportFile struct {
	file string // the disk's flat file
	size int64  // the disk's capacity: the bytes served
}

// vmkeepExport is an export lease's downloads by name ("disk-0.vmdk").
type vmkeepExport struct {
	lease types.ManagedObjectReference
	files map[string]vmkeepExportFile
}

// vmkeepExports maps the ticket in an export lease's URLs to the export.
var vmkeepExports sync.Map

// vmkeepDiskSlot names a disk by its controller and unit, as vCenter's export device keys do:
// "ParaVirtualSCSIController0:0".
func vmkeepDiskSlot(devices object.VirtualDeviceList, disk *types.VirtualDisk) string {
	unit := int32(0)
	if disk.UnitNumber != nil {
		unit = *disk.UnitNumber
	}
	controller := devices.FindByKey(disk.ControllerKey)
	if controller == nil {
		return fmt.Sprintf("VirtualDisk%d:%d", disk.Key, unit)
	}
	bus := int32(0)
	if c, ok := controller.(types.BaseVirtualController); ok {
		bus = c.GetVirtualController().BusNumber
	}
	return fmt.Sprintf("%s%d:%d", reflect.TypeOf(controller).Elem().Name(), bus, unit)
}

// ExportVm answers a ready NFC lease to download the VM's disks (see the top of this file).
func (vm *VirtualMachine) ExportVm(ctx *Context, req *types.ExportVm) soap.HasFault {
	body := new(methods.ExportVmBody)
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		body.Fault_ = Fault("", &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOff,
			ExistingState:  vm.Runtime.PowerState,
		})
		return body
	}

	lease := vmkeepNewExportLease(vm, "ExportVm", nil) // vmkeep_leases.go
	vm.vmkeepFillExportLease(lease, object.VirtualDeviceList(vm.Config.Hardware.Device), vm.vmkeepDiskDataFile)
	body.Res = &types.ExportVmResponse{Returnval: lease.Reference()}
	return body
}

// vmkeepFillExportLease lists one download per disk of devices in the lease's info.deviceUrl;
// fileOf names the file holding a disk's data.
func (vm *VirtualMachine) vmkeepFillExportLease(lease *HttpNfcLease, devices object.VirtualDeviceList, fileOf func(*types.VirtualDisk) string) {
	ref := lease.Reference()
	files := make(map[string]vmkeepExportFile)
	var random [16]byte
	_, _ = rand.Read(random[:])
	random[0] = 0x52
	ticket := fmt.Sprintf("%x-%x-%x-%x-%x", random[:4], random[4:6], random[6:8], random[8:10], random[10:])
	for _, device := range devices {
		disk, ok := device.(*types.VirtualDisk)
		if !ok {
			continue
		}
		file := fileOf(disk)
		if file == "" {
			continue
		}
		name := fmt.Sprintf("disk-%d.vmdk", len(files))
		size := vmkeepDiskCapacity(disk)
		files[name] = vmkeepExportFile{file: file, size: size}
		lease.files[name] = file
		key := fmt.Sprintf("/%s/%s", vm.Self.Value, vmkeepDiskSlot(devices, disk))
		lease.Info.TotalDiskCapacityInKB += (size + 1023) / 1024
		lease.Info.DeviceUrl = append(lease.Info.DeviceUrl, types.HttpNfcLeaseDeviceUrl{
			Key:       key,
			ImportKey: key,
			Url: (&url.URL{
				Scheme: "https",
				Host:   "*",
				Path:   nfcPrefix + path.Join(ticket, name),
			}).String(),
			Disk:     types.NewBool(true),
			TargetId: name,
			FileSize: size,
		})
	}
	vmkeepExports.Store(ticket, &vmkeepExport{lease: ref, files: files})
}

// vmkeepServeNFC serves GET and HEAD of NFC lease URLs (hook in ServeNFC, vmkeep patch 6);
// false leaves other methods (uploads) to the stock code.
func vmkeepServeNFC(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := strings.Split(r.URL.Path, "/")
	if len(p) < 2 {
		http.NotFound(w, r)
		return true
	}
	id, name := p[len(p)-2], p[len(p)-1]
	lease := types.ManagedObjectReference{Type: "HttpNfcLease", Value: id}
	export, isExport := vmkeepExports.Load(id)
	if isExport {
		lease = export.(*vmkeepExport).lease
	}
	l, ok := nfcLease.Load(lease)
	if !ok {
		log.Printf("nfc %s: no active lease %s", r.Method, id)
		http.NotFound(w, r)
		return true
	}
	cookie, err := r.Cookie(soap.SessionCookieName)
	if err != nil {
		http.Error(w, "a session cookie is required", http.StatusUnauthorized)
		return true
	}
	if _, ok := Map.SessionManager().getSession(cookie.Value); !ok {
		http.Error(w, "the session is not authenticated", http.StatusUnauthorized)
		return true
	}

	var download vmkeepExportFile
	found := false
	if isExport {
		download, found = export.(*vmkeepExport).files[name]
	} else if file, ok := l.(*HttpNfcLease).files[name]; ok { // an import lease: the file as is
		if info, err := os.Stat(file); err == nil {
			download, found = vmkeepExportFile{file: file, size: info.Size()}, true
		}
	}
	if !found {
		http.NotFound(w, r)
		return true
	}
	disk, err := vmkeepOpenDisk(download.file, download.size)
	if err != nil {
		log.Printf("nfc %s %s: %s", r.Method, download.file, err)
		http.NotFound(w, r)
		return true
	}
	defer disk.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if isExport && Faults.nfcStreamOptimized() {
		if r.Method == http.MethodGet {
			if err := vmkeepWriteStreamOptimized(w, disk, download.size); err != nil {
				log.Printf("nfc GET %s: %s", download.file, err)
			}
		}
		return true
	}
	if rate := Faults.nfcBytesPerSecond(); isExport && rate > 0 { // the nfcBytesPerSecond knob
		w = &vmkeepPacedWriter{ResponseWriter: w, rate: rate, start: time.Now()}
	}
	if limit := Faults.nfcFailAfter(); isExport && limit > 0 && r.Method == http.MethodGet {
		// the nfcFailAfter knob: the download breaks off after limit bytes
		http.ServeContent(&vmkeepCutWriter{ResponseWriter: w, left: limit}, r, name, time.Time{},
			io.NewSectionReader(disk, 0, download.size))
		panic(http.ErrAbortHandler) // close the connection mid-body
	}
	http.ServeContent(w, r, name, time.Time{}, io.NewSectionReader(disk, 0, download.size))
	return true
}

// vmkeepCutWriter accepts left bytes of a body, then fails every write.
type vmkeepCutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *vmkeepCutWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrShortWrite
	}
	if int64(len(p)) > c.left {
		n, _ := c.ResponseWriter.Write(p[:c.left])
		c.left = 0
		return n, io.ErrShortWrite
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

// vmkeepPacedWriter writes at most rate bytes a second (on average since start).
type vmkeepPacedWriter struct {
	http.ResponseWriter
	rate    int64
	start   time.Time
	written int64
}

func (p *vmkeepPacedWriter) Write(b []byte) (int, error) {
	n, err := p.ResponseWriter.Write(b)
	p.written += int64(n)
	due := p.start.Add(time.Duration(float64(p.written) / float64(p.rate) * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		time.Sleep(wait)
	}
	return n, err
}
