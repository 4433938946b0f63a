/*
vmkeep patches 32 and 33 (new file): property changes reach the filters that ask for them.

Patch 32: a change of a property reaches filters on its sub-properties.

The 0.24.2 simulator reports a changed property to a PropertyFilter only when the change's
name equals a path of the filter or lies below one ("runtime.powerState" for a filter on
"runtime"). Its own changes are often coarser than the paths a client asks for — a
reconfigure changes "config", a filter asks for "config.hardware.device" and
"config.changeTrackingEnabled" — and were then never reported (vCenter reports them). The
filter now also reports every path of its spec below a changed property, with the value read
from the object (patches/0032-filter-reports-deeper-paths.patch calls this).

Patch 33: ReconfigVM_Task changed the VM's config in place without telling the registry
(change tracking switched, say, was never reported); it now reports "config"
(vmkeepReportChange, called by patches/0033-reconfigure-reports-config.patch).
*/

package simulator

import (
	"reflect"
	"strings"

	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// vmkeepReportChange tells the property collectors that the named properties of obj changed
// in place (their values are read from the object).
func vmkeepReportChange(obj mo.Reference, names ...string) {
	changes := make([]types.PropertyChange, 0, len(names))
	for _, name := range names {
		val, err := fieldValue(reflect.ValueOf(obj), name)
		if err != nil {
			continue
		}
		changes = append(changes, types.PropertyChange{
			Name: name, Op: types.PropertyChangeOpAssign, Val: val,
		})
	}
	Map.applyHandlers(func(o RegisterObject) {
		o.UpdateObject(obj, changes)
	})
}

// vmkeepDeeperPaths gives a change of `name` for each path of the filter's spec under it.
func (f *PropertyFilter) vmkeepDeeperPaths(ctx *Context, ref types.ManagedObjectReference, name string) []types.PropertyChange {
	obj := ctx.Map.Get(ref)
	if obj == nil {
		return nil
	}
	kind := getManagedObject(obj).Type()
	var changes []types.PropertyChange
	for _, p := range f.Spec.PropSet {
		if p.Type != ref.Type {
			field, ok := kind.FieldByName(p.Type)
			if !(ok && field.Anonymous) {
				continue
			}
		}
		for _, path := range p.PathSet {
			if !strings.HasPrefix(path, name+".") {
				continue
			}
			val, err := fieldValue(reflect.ValueOf(obj), path)
			if err != nil {
				continue
			}
			changes = append(changes, types.PropertyChange{
				Name: path, Op: types.PropertyChangeOpAssign, Val: val,
			})
		}
	}
	return changes
}

// vmkeepAsksFor: whether the filter's spec asks for properties of ref's type (patch 31: only
// then can a new or changed object of that type enter the filter's result).
func vmkeepAsksFor(f *PropertyFilter, ref types.ManagedObjectReference) bool {
	for _, p := range f.Spec.PropSet {
		if p.Type == ref.Type || p.Type == "ManagedEntity" {
			return true
		}
	}
	return false
}
