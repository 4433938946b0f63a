/*
Copyright (c) 2017 VMware, Inc. All Rights Reserved.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package simulator

import (
	"fmt"
	"os"
	"path"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type VirtualMachineSnapshot struct {
	mo.VirtualMachineSnapshot
}

func (v *VirtualMachineSnapshot) createSnapshotFiles() types.BaseMethodFault {
	vm := Map.Get(v.Vm).(*VirtualMachine)

	snapshotDirectory := vm.Config.Files.SnapshotDirectory
	if snapshotDirectory == "" {
		snapshotDirectory = vm.Config.Files.VmPathName
	}

	index := 1
	for {
		fileName := fmt.Sprintf("%s-Snapshot%d.vmsn", vm.Name, index)
		f, err := vm.createFile(snapshotDirectory, fileName, false)
		if err != nil {
			switch err.(type) {
			case *types.FileAlreadyExists:
				index++
				continue
			default:
				return err
			}
		}

		_ = f.Close()

		p, _ := parseDatastorePath(snapshotDirectory)
		vm.useDatastore(p.Datastore)
		dir := p.Path
		if path.Ext(dir) == ".vmx" {
			dir = path.Dir(dir) // vmkeep patch 3: VmPathName names the .vmx file, not a directory
		}
		datastorePath := object.DatastorePath{
			Datastore: p.Datastore,
			Path:      path.Join(dir, fileName),
		}

		dataLayoutKey := vm.addFileLayoutEx(datastorePath, 0)
		vm.addSnapshotLayout(v.Self, dataLayoutKey)
		vm.addSnapshotLayoutEx(v.Self, dataLayoutKey, -1)

		return nil
	}
}

func (v *VirtualMachineSnapshot) removeSnapshotFiles(ctx *Context) types.BaseMethodFault {
	// TODO: also remove delta disks that were created when snapshot was taken

	vm := Map.Get(v.Vm).(*VirtualMachine)

	for idx, sLayout := range vm.Layout.Snapshot {
		if sLayout.Key == v.Self {
			vm.Layout.Snapshot = append(vm.Layout.Snapshot[:idx], vm.Layout.Snapshot[idx+1:]...)
			break
		}
	}

	for idx, sLayoutEx := range vm.LayoutEx.Snapshot {
		if sLayoutEx.Key == v.Self {
			for _, file := range vm.LayoutEx.File {
				if file.Key == sLayoutEx.DataKey || file.Key == sLayoutEx.MemoryKey {
					p, fault := parseDatastorePath(file.Name)
					if fault != nil {
						return fault
					}

					host := Map.Get(*vm.Runtime.Host).(*HostSystem)
					datastore := Map.FindByName(p.Datastore, host.Datastore).(*Datastore)
					dFilePath := path.Join(datastore.Info.GetDatastoreInfo().Url, p.Path)

					_ = os.Remove(dFilePath)
				}
			}

			vm.LayoutEx.Snapshot = append(vm.LayoutEx.Snapshot[:idx], vm.LayoutEx.Snapshot[idx+1:]...)
		}
	}

	vm.RefreshStorageInfo(ctx, nil)

	return nil
}

func (v *VirtualMachineSnapshot) RemoveSnapshotTask(ctx *Context, req *types.RemoveSnapshot_Task) soap.HasFault {
	task := CreateTask(v, "removeSnapshot", func(t *Task) (types.AnyType, types.BaseMethodFault) {
		var changes []types.PropertyChange

		vm := Map.Get(v.Vm).(*VirtualMachine)
		// vmkeep patch 3: with removeChildren, the whole subtree goes (files and objects),
		// and a current snapshot inside it moves to the removed snapshot's parent.
		removed := []types.ManagedObjectReference{req.This}
		if req.RemoveChildren {
			if node := findSnapshotInTree(vm.Snapshot.RootSnapshotList, req.This); node != nil {
				removed = append(removed, allSnapshotsInTree(node.ChildSnapshotList)...)
			}
		}
		Map.WithLock(vm, func() {
			if vm.Snapshot.CurrentSnapshot != nil && FindReference(removed, *vm.Snapshot.CurrentSnapshot) != nil {
				parent := findParentSnapshotInTree(vm.Snapshot.RootSnapshotList, req.This)
				changes = append(changes, types.PropertyChange{Name: "snapshot.currentSnapshot", Val: parent})
			}

			rootSnapshots := removeSnapshotInTree(vm.Snapshot.RootSnapshotList, req.This, req.RemoveChildren)
			changes = append(changes, types.PropertyChange{Name: "snapshot.rootSnapshotList", Val: rootSnapshots})

			if len(rootSnapshots) == 0 {
				changes = []types.PropertyChange{
					{Name: "snapshot", Val: nil},
				}
			}

			for _, ref := range removed {
				if s, ok := Map.Get(ref).(*VirtualMachineSnapshot); ok {
					s.removeSnapshotFiles(ctx)
				}
			}

			Map.Update(vm, changes)
		})

		for _, ref := range removed {
			Map.Remove(ref)
		}

		return nil, nil
	})
	vmkeepSetTaskEntity(task, v.Vm) // vmkeep patch 2

	return &methods.RemoveSnapshot_TaskBody{
		Res: &types.RemoveSnapshot_TaskResponse{
			Returnval: task.Run(),
		},
	}
}

func (v *VirtualMachineSnapshot) RevertToSnapshotTask(req *types.RevertToSnapshot_Task) soap.HasFault {
	task := CreateTask(v, "revertToSnapshot", func(t *Task) (types.AnyType, types.BaseMethodFault) {
		vm := Map.Get(v.Vm).(*VirtualMachine)

		Map.WithLock(vm, func() {
			Map.Update(vm, []types.PropertyChange{
				{Name: "snapshot.currentSnapshot", Val: v.Self},
			})
		})

		return nil, nil
	})
	vmkeepSetTaskEntity(task, v.Vm) // vmkeep patch 2

	return &methods.RevertToSnapshot_TaskBody{
		Res: &types.RevertToSnapshot_TaskResponse{
			Returnval: task.Run(),
		},
	}
}
