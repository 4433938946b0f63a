/*
vmkeep patch 20 (new file): what `vmkeep restore --vcenter` needs of the simulator.

  - NFC uploads (ImportVApp leases, PUT/POST to /nfc/<lease>/<disk>.vmdk) land in the disk:
    a streamOptimized VMDK stream is inflated grain by grain into the disk's flat file (holes
    where no grain was sent), any other body is the flat disk itself, as vCenter turns both
    into a disk. The stock handler discarded the bytes. The disk then reads back over the
    datastore HTTP interface, ExportVm and CloneVM like any other.
  - Restore fault injection (POST /vmkeep/restore-faults): failUploadAfter ends an NFC
    upload with HTTP 500 once that many body bytes arrived (0: never); failMethod is a
    regular expression on SOAP method names (e.g. "ImportVApp|Rename_Task") answered with a
    SystemError fault before the method runs, after failMethodSkip matching calls went
    through; failMethodCount limits how many calls fail (0: all).

Hooks in stock files: ServeNFC (http_nfc_lease.go) and Service.call (simulator.go).
*/

package simulator

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/vmware/govmomi/vim25/types"
)

// RestoreFaultConfig is the restore fault configuration (JSON names are the control API).
type RestoreFaultConfig struct {
	FailUploadAfter int64  `json:"failUploadAfter"`
	FailMethod      string `json:"failMethod"`
	FailMethodCount int    `json:"failMethodCount"`
	FailMethodSkip  int    `json:"failMethodSkip"`
}

type restoreFaultState struct {
	mu      sync.Mutex
	config  RestoreFaultConfig
	method  *regexp.Regexp
	failed  int
	skipped int
}

// RestoreFaults is the process-wide restore fault state.
var RestoreFaults = &restoreFaultState{}

// Config returns the current configuration.
func (f *restoreFaultState) Config() RestoreFaultConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config
}

// Set installs a configuration; on error nothing changes.
func (f *restoreFaultState) Set(c RestoreFaultConfig) error {
	var method *regexp.Regexp
	if c.FailMethod != "" {
		var err error
		if method, err = regexp.Compile(c.FailMethod); err != nil {
			return fmt.Errorf("failMethod: %v", err)
		}
	}
	if c.FailUploadAfter < 0 || c.FailMethodCount < 0 || c.FailMethodSkip < 0 {
		return fmt.Errorf("counts must not be negative")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.config, f.method, f.failed, f.skipped = c, method, 0, 0
	return nil
}

// vmkeepRestoreFault is the injected fault for a SOAP method, or nil (hook in Service.call).
func vmkeepRestoreFault(method string) types.BaseMethodFault {
	f := RestoreFaults
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.method == nil || !f.method.MatchString(method) {
		return nil
	}
	if f.skipped < f.config.FailMethodSkip {
		f.skipped++
		return nil
	}
	if f.config.FailMethodCount > 0 && f.failed >= f.config.FailMethodCount {
		return nil
	}
	f.failed++
	return &types.SystemError{Reason: "vmkeep injected fault in " + method}
}

func (f *restoreFaultState) uploadLimit() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config.FailUploadAfter
}

// vmkeepServeNFCUpload handles PUT/POST to an NFC lease URL; false for other methods.
func vmkeepServeNFCUpload(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		return false
	}
	p := strings.Split(r.URL.Path, "/")
	id, name := p[len(p)-2], p[len(p)-1]
	l, ok := nfcLease.Load(types.ManagedObjectReference{Type: "HttpNfcLease", Value: id})
	if !ok {
		http.NotFound(w, r)
		return true
	}
	file, ok := l.(*HttpNfcLease).files[name]
	if !ok {
		http.NotFound(w, r)
		return true
	}
	target := file
	if strings.HasSuffix(file, ".vmdk") && !strings.HasSuffix(file, "-flat.vmdk") {
		target = vmkeepFlatName(file)
	}
	var body io.Reader = r.Body
	if limit := RestoreFaults.uploadLimit(); limit > 0 {
		body = &vmkeepFailingReader{r: r.Body, left: limit}
	}
	n, err := vmkeepWriteUpload(target, body)
	if err != nil {
		log.Printf("nfc %s %s: %v", r.Method, target, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return true
	}
	log.Printf("nfc %s %s: %d disk bytes", r.Method, target, n)
	w.WriteHeader(http.StatusOK)
	return true
}

type vmkeepFailingReader struct {
	r    io.Reader
	left int64
}

func (f *vmkeepFailingReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, fmt.Errorf("vmkeep injected upload failure")
	}
	if int64(len(p)) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= int64(n)
	return n, err
}

// vmkeepWriteUpload writes an uploaded disk into its flat file: a streamOptimized stream
// inflated at each grain's offset (the file sized to the capacity), or the raw bytes.
func vmkeepWriteUpload(target string, body io.Reader) (int64, error) {
	in := bufio.NewReaderSize(body, 1<<20)
	out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	head, _ := in.Peek(4)
	if string(head) != "KDMV" {
		return io.Copy(out, in)
	}
	header := make([]byte, vmkeepSector)
	if _, err := io.ReadFull(in, header); err != nil {
		return 0, err
	}
	capacity := int64(binary.LittleEndian.Uint64(header[12:])) * vmkeepSector
	overhead := int64(binary.LittleEndian.Uint64(header[64:]))
	if _, err := io.CopyN(io.Discard, in, overhead*vmkeepSector-vmkeepSector); err != nil {
		return 0, err
	}
	if err := out.Truncate(capacity); err != nil {
		return 0, err
	}
	marker := make([]byte, 12)
	var written int64
	for {
		if _, err := io.ReadFull(in, marker); err != nil {
			return written, fmt.Errorf("streamOptimized upload cut short: %v", err)
		}
		value := binary.LittleEndian.Uint64(marker[0:])
		size := int64(binary.LittleEndian.Uint32(marker[8:]))
		if size == 0 { // metadata marker: sectors, 0, type; the rest of the sector, then data
			rest := make([]byte, vmkeepSector-12)
			if _, err := io.ReadFull(in, rest); err != nil {
				return written, err
			}
			kind := binary.LittleEndian.Uint32(rest[0:])
			if kind == 0 {
				return written, nil
			}
			if _, err := io.CopyN(io.Discard, in, int64(value)*vmkeepSector); err != nil {
				return written, err
			}
			continue
		}
		compressed := make([]byte, size)
		if _, err := io.ReadFull(in, compressed); err != nil {
			return written, err
		}
		if pad := (12 + size) % vmkeepSector; pad != 0 {
			if _, err := io.CopyN(io.Discard, in, vmkeepSector-pad); err != nil {
				return written, err
			}
		}
		z, err := zlib.NewReader(bytes.NewReader(compressed))
		if err != nil {
			return written, fmt.Errorf("grain at sector %d: %v", value, err)
		}
		grain, err := io.ReadAll(z)
		if err != nil {
			return written, fmt.Errorf("grain at sector %d: %v", value, err)
		}
		offset := int64(value) * vmkeepSector
		if offset+int64(len(grain)) > capacity {
			return written, fmt.Errorf("grain at sector %d lies beyond the capacity", value)
		}
		if _, err := out.WriteAt(grain, offset); err != nil {
			return written, err
		}
		written += int64(len(grain))
	}
}

// vmkeepCloneDevice returns a copy of a disk device (with its own backing) for a clone's
// config, recording the source disk's data file; other devices are returned as they are
// (hook in CloneVMTask, vmkeep patch 21).
func (vm *VirtualMachine) vmkeepCloneDevice(device types.BaseVirtualDevice, sources *[]string) types.BaseVirtualDevice {
	disk, ok := device.(*types.VirtualDisk)
	if !ok {
		return device
	}
	*sources = append(*sources, vm.vmkeepDiskDataFile(disk))
	copied := *disk
	if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
		backing := *b
		copied.Backing = &backing
	}
	return &copied
}

// vmkeepCopyCloneDisks copies the source disks' data into the clone's disks, in order.
func (vm *VirtualMachine) vmkeepCopyCloneDisks(sources []string) {
	i := 0
	for _, device := range vm.Config.Hardware.Device {
		disk, ok := device.(*types.VirtualDisk)
		if !ok || i >= len(sources) {
			continue
		}
		source, target := sources[i], vm.vmkeepDiskDataFile(disk)
		i++
		if source == "" || target == "" {
			continue
		}
		in, err := os.Open(source)
		if err != nil {
			continue
		}
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err == nil {
			_, _ = io.Copy(out, in)
			_ = out.Close()
		}
		_ = in.Close()
		vm.vmkeepSizeDiskFile(disk)
	}
}
