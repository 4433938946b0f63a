package main

import (
	"context"
	"fmt"
	"log"
	"path"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// layout says how big the inventory is and where VMs go.
type layout struct {
	datacenters int
	clusters    int // per datacenter; 0: hosts are standalone
	hosts       int // per cluster, or standalone per datacenter when clusters == 0
	vms         int // in total, spread round-robin over the compute resources
	folders     []string
}

func (l layout) model() *simulator.Model {
	m := simulator.VPX()
	m.Datacenter = l.datacenters
	m.Cluster = l.clusters
	if l.clusters > 0 {
		m.ClusterHost = l.hosts
		m.Host = 0
	} else {
		m.ClusterHost = 0
		m.Host = l.hosts
	}
	m.Machine = 0 // VMs are created by addVMs, to control their number and folders
	m.Datastore = 1
	m.Portgroup = 0 // VM NICs use the hosts' "VM Network", as the stock ESX model does
	return m
}

// placement is one compute resource (cluster or standalone host) VMs can be created on.
type placement struct {
	prefix  string
	pool    *object.ResourcePool
	host    *object.HostSystem
	folders []*object.Folder // index 0 is the datacenter's vm folder
}

// addVMs creates l.vms powered-on VMs like the stock model does (a pvscsi controller, a
// 1 MiB disk "[LocalDS_0] NAME/disk1.vmdk", a CD-ROM and a NIC), spread round-robin over
// the compute resources, VM k of a resource going into folder k mod (1+len(l.folders)).
func addVMs(ctx context.Context, c *vim25.Client, l layout) error {
	places, err := placements(ctx, c, l)
	if err != nil {
		return err
	}
	if len(places) == 0 {
		if l.vms > 0 {
			return fmt.Errorf("no hosts to place %d VMs on", l.vms)
		}
		return nil
	}
	count := make([]int, len(places))
	for i := 0; i < l.vms; i++ {
		p := places[i%len(places)]
		k := count[i%len(places)]
		count[i%len(places)]++
		name := fmt.Sprintf("%s_VM%d", p.prefix, k)
		folder := p.folders[k%len(p.folders)]
		if err := createVM(ctx, c, name, folder, p); err != nil {
			return fmt.Errorf("create %s: %v", name, err)
		}
		if (i+1)%1000 == 0 {
			log.Printf("created %d of %d VMs", i+1, l.vms)
		}
	}
	return nil
}

func placements(ctx context.Context, c *vim25.Client, l layout) ([]placement, error) {
	finder := find.NewFinder(c, false)
	dcs, err := finder.DatacenterList(ctx, "*")
	if err != nil {
		return nil, err
	}
	var places []placement
	for _, dc := range dcs {
		finder.SetDatacenter(dc)
		dcFolders, err := dc.Folders(ctx)
		if err != nil {
			return nil, err
		}
		folders, err := vmFolders(ctx, dcFolders.VmFolder, l.folders)
		if err != nil {
			return nil, err
		}
		resources, err := finder.ComputeResourceList(ctx, "*")
		if err != nil {
			return nil, err
		}
		for _, cr := range resources {
			pool, err := cr.ResourcePool(ctx)
			if err != nil {
				return nil, err
			}
			p := placement{pool: pool, folders: folders}
			if _, ok := simulator.Map.Get(cr.Reference()).(*simulator.ClusterComputeResource); ok {
				p.prefix = cr.Name() + "_RP0" // the stock model's names: DC0_C0_RP0_VM0
			} else {
				hosts, err := cr.Hosts(ctx)
				if err != nil || len(hosts) == 0 {
					return nil, fmt.Errorf("standalone host %s: %v", cr.Name(), err)
				}
				p.host = hosts[0]
				p.prefix = cr.Name() // DC0_H0_VM0
			}
			places = append(places, p)
		}
	}
	return places, nil
}

// vmFolders creates the given sub-folders ("prod", "prod/db") under root; it returns root
// followed by them in order.
func vmFolders(ctx context.Context, root *object.Folder, names []string) ([]*object.Folder, error) {
	made := map[string]*object.Folder{"": root}
	result := []*object.Folder{root}
	var get func(string) (*object.Folder, error)
	get = func(name string) (*object.Folder, error) {
		if f, ok := made[name]; ok {
			return f, nil
		}
		parent, err := get(strings.TrimSuffix(path.Dir(name), "."))
		if err != nil {
			return nil, err
		}
		f, err := parent.CreateFolder(ctx, path.Base(name))
		if err != nil {
			return nil, err
		}
		made[name] = f
		return f, nil
	}
	for _, name := range names {
		name = strings.Trim(name, "/")
		if name == "" {
			continue
		}
		f, err := get(name)
		if err != nil {
			return nil, fmt.Errorf("folder %q: %v", name, err)
		}
		result = append(result, f)
	}
	return result, nil
}

func createVM(ctx context.Context, c *vim25.Client, name string, folder *object.Folder, p placement) error {
	config := types.VirtualMachineConfigSpec{
		Name:    name,
		GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files:   &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
	}
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return err
	}
	ide, err := devices.CreateIDEController()
	if err != nil {
		return err
	}
	cdrom, err := devices.CreateCdrom(ide.(*types.VirtualIDEController))
	if err != nil {
		return err
	}
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
		config.Files.VmPathName+" "+path.Join(name, "disk1.vmdk"))
	disk.CapacityInKB = 1024
	nic := esx.EthernetCard
	devices = append(devices, scsi, cdrom, disk, &nic)
	if config.DeviceChange, err = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd); err != nil {
		return err
	}

	task, err := folder.CreateVM(ctx, config, p.pool, p.host)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return err
	}
	vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
	task, err = vm.PowerOn(ctx)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

// countVMs is what the ready line reports, read back from the simulator.
func countVMs() int {
	n := 0
	for _, obj := range simulator.Map.All("VirtualMachine") {
		if _, ok := obj.(*simulator.VirtualMachine); ok {
			n++
		}
	}
	return n
}
