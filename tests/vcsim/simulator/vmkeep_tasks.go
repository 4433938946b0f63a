/*
vmkeep patches 2 and 5 (new file): tasks as vCenter reports them, and slow tasks.
*/

package simulator

import (
	"strings"
	"time"

	"github.com/vmware/govmomi/vim25/types"
)

// vmkeepSetTaskEntity makes a snapshot-level task name its VM, as vCenter does (patch 2).
func vmkeepSetTaskEntity(t *Task, vm types.ManagedObjectReference) {
	entity := vm
	t.Info.Entity = &entity
	if obj, ok := Map.Get(vm).(*VirtualMachine); ok {
		t.Info.EntityName = obj.Name
	}
}

// vmkeepTaskName turns a CreateTask name like "createSnapshot" or "reconfigVm" into the
// method's WSDL name, "CreateSnapshot_Task" or "ReconfigVM_Task", which is what vCenter puts
// in TaskInfo.name and what pyVmomi can resolve (patch 2). The stock "CreateSnapshot" makes
// pyVim's WaitForTask fail while a task is running.
func vmkeepTaskName(name string) string {
	name = ucFirst(name)
	if strings.HasSuffix(name, "Vm") {
		name = strings.TrimSuffix(name, "Vm") + "VM"
	}
	return name + vTaskSuffix
}

// vmkeepRunLater finishes a delayed task under the lock of the object it was created on
// (patch 5).
func (t *Task) vmkeepRunLater(delay time.Duration) {
	time.Sleep(delay)
	Map.WithLock(t.handler, t.finish)
}
