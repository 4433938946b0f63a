/*
vmkeep patch 5 (new file): fault injection and request counters for vmkeep's tests.

The stock code calls in here from a few one-line hooks (see tests/vcsim/PATCHES.md):
CreateSnapshotTask (snapshotFault), Task.Run (taskDelay), Context.mapSession (limitSession)
and ServeSDK (count). tests/vcsim/main.go sets the configuration from flags and from its
HTTP control endpoint; everything here is safe to change while requests are served.
*/

package simulator

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/types"
)

// FaultConfig is the fault-injection configuration (JSON field names are the control API).
type FaultConfig struct {
	// FailSnapshot is a regular expression on VM names: CreateSnapshot_Task on a matching VM
	// ends in error with FailSnapshotFault. Empty: never.
	FailSnapshot string `json:"failSnapshot"`
	// FailSnapshotFault names the fault (see snapshotFaults); default "FileFault".
	FailSnapshotFault string `json:"failSnapshotFault"`
	// FailSnapshotQuiescedOnly limits FailSnapshot to snapshots requested with quiesce=true.
	FailSnapshotQuiescedOnly bool `json:"failSnapshotQuiescedOnly"`
	// TaskDelayMs keeps tasks "running" that long before they do their work. 0: off.
	TaskDelayMs int `json:"taskDelayMs"`
	// TaskDelayMatch is a regular expression on task names (e.g. "CreateSnapshot_Task");
	// empty: every task.
	TaskDelayMatch string `json:"taskDelayMatch"`
	// SessionCallLimit terminates a session once it has served this many calls (its Login
	// included): the next call finds it gone (NotAuthenticated). 0: off.
	SessionCallLimit int `json:"sessionCallLimit"`
	// MaxPage caps the page size of RetrievePropertiesEx below the client's maxObjects. 0: off.
	MaxPage int `json:"maxPage"`
	// FailRequests answers the next N /sdk requests with HTTP status FailStatus (default
	// 503) and no body; it counts down to 0.
	FailRequests int `json:"failRequests"`
	FailStatus   int `json:"failStatus"`
	// DropRequests closes the connection of the next N /sdk requests without an answer
	// (the client sees the server disconnect); it counts down to 0.
	DropRequests int `json:"dropRequests"`
	// NfcFormat is what NFC export downloads serve: "raw" (default; the disk's bytes, with
	// Range) or "streamOptimized" (a streamOptimized VMDK, as vCenter serves; no Range).
	NfcFormat string `json:"nfcFormat"`
	// NfcLeaseTimeout is the info.leaseTimeout (seconds) of new export leases: a lease that
	// hears no HttpNfcLeaseProgress for that long ends in error (timed out), as on vCenter.
	// 0: 300 s.
	NfcLeaseTimeout int `json:"nfcLeaseTimeout"`
	// NfcFailAfter cuts every export download (GET of a lease URL) after this many bytes:
	// the connection closes mid-body. 0: off.
	NfcFailAfter int64 `json:"nfcFailAfter"`
	// RefuseFlatReads answers a datastore HTTP GET/HEAD of any "-flat.vmdk" file with this
	// HTTP status (e.g. 403 or 404), whatever the datastore's type. 0: off.
	RefuseFlatReads int `json:"refuseFlatReads"`
	// NfcBytesPerSecond paces every export download to at most this many bytes a second,
	// like a slow host or network. 0: off.
	NfcBytesPerSecond int64 `json:"nfcBytesPerSecond"`
}

// FaultStats counts what the server saw since start or the last reset.
type FaultStats struct {
	Requests           int            `json:"requests"`
	Methods            map[string]int `json:"methods"`
	SessionsTerminated int            `json:"sessionsTerminated"`
}

var snapshotFaults = map[string]func(vm *VirtualMachine) types.BaseMethodFault{
	"FileFault": func(vm *VirtualMachine) types.BaseMethodFault {
		return &types.FileFault{File: vm.Config.Files.VmPathName}
	},
	"NoDiskSpace": func(vm *VirtualMachine) types.BaseMethodFault {
		return &types.NoDiskSpace{Datastore: "LocalDS_0"}
	},
	"InvalidState": func(vm *VirtualMachine) types.BaseMethodFault {
		return &types.InvalidState{}
	},
	"TaskInProgress": func(vm *VirtualMachine) types.BaseMethodFault {
		return &types.TaskInProgress{Task: vm.Self}
	},
	"TooManySnapshotLevels": func(vm *VirtualMachine) types.BaseMethodFault {
		return &types.TooManySnapshotLevels{}
	},
	"ApplicationQuiesceFault": func(vm *VirtualMachine) types.BaseMethodFault {
		return &types.ApplicationQuiesceFault{}
	},
}

type faultState struct {
	mu           sync.Mutex
	config       FaultConfig
	failSnapshot *regexp.Regexp
	taskMatch    *regexp.Regexp
	stats        FaultStats
}

// Faults is the process-wide fault-injection state.
var Faults = &faultState{stats: FaultStats{Methods: map[string]int{}}}

// Config returns the current configuration.
func (f *faultState) Config() FaultConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config
}

// Set validates and installs a new configuration; on error nothing changes.
func (f *faultState) Set(c FaultConfig) error {
	var failSnapshot, taskMatch *regexp.Regexp
	var err error
	if c.FailSnapshot != "" {
		if failSnapshot, err = regexp.Compile(c.FailSnapshot); err != nil {
			return fmt.Errorf("failSnapshot: %v", err)
		}
	}
	if c.TaskDelayMatch != "" {
		if taskMatch, err = regexp.Compile(c.TaskDelayMatch); err != nil {
			return fmt.Errorf("taskDelayMatch: %v", err)
		}
	}
	if c.FailSnapshotFault == "" {
		c.FailSnapshotFault = "FileFault"
	}
	if _, ok := snapshotFaults[c.FailSnapshotFault]; !ok {
		var names []string
		for name := range snapshotFaults {
			names = append(names, name)
		}
		sort.Strings(names)
		return fmt.Errorf("failSnapshotFault: %q is not one of %v", c.FailSnapshotFault, names)
	}
	if c.TaskDelayMs < 0 || c.SessionCallLimit < 0 || c.MaxPage < 0 || c.FailRequests < 0 || c.DropRequests < 0 ||
		c.NfcLeaseTimeout < 0 || c.NfcFailAfter < 0 || c.NfcBytesPerSecond < 0 {
		return fmt.Errorf("counts and delays must not be negative")
	}
	if c.RefuseFlatReads != 0 && (c.RefuseFlatReads < 400 || c.RefuseFlatReads > 599) {
		return fmt.Errorf("refuseFlatReads must be an HTTP error status (400-599) or 0")
	}
	if c.NfcFormat == "" {
		c.NfcFormat = "raw"
	}
	if c.NfcFormat != "raw" && c.NfcFormat != "streamOptimized" {
		return fmt.Errorf("nfcFormat: %q is not raw or streamOptimized", c.NfcFormat)
	}
	if c.FailStatus == 0 {
		c.FailStatus = http.StatusServiceUnavailable
	}
	if c.FailStatus < 400 || c.FailStatus > 599 {
		return fmt.Errorf("failStatus must be an HTTP error status (400-599)")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.config, f.failSnapshot, f.taskMatch = c, failSnapshot, taskMatch
	return nil
}

// Stats returns a copy of the counters.
func (f *faultState) Stats() FaultStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Methods = make(map[string]int, len(f.stats.Methods))
	for k, v := range f.stats.Methods {
		s.Methods[k] = v
	}
	return s
}

// ResetStats zeroes the counters.
func (f *faultState) ResetStats() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats = FaultStats{Methods: map[string]int{}}
}

// TerminateSessions ends every SOAP session now, as an administrator's TerminateSession
// would; it returns how many there were.
func (f *faultState) TerminateSessions() int {
	sm := Map.SessionManager()
	sessionMutex.Lock()
	n := len(sm.sessions)
	sm.sessions = make(map[string]Session)
	sessionMutex.Unlock()

	f.mu.Lock()
	f.stats.SessionsTerminated += n
	f.mu.Unlock()
	return n
}

func (f *faultState) count(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Requests++
	f.stats.Methods[method]++
}

// intercept answers an /sdk request itself when FailRequests or DropRequests says so.
func (f *faultState) intercept(w http.ResponseWriter) bool {
	f.mu.Lock()
	drop, status := false, 0
	if f.config.DropRequests > 0 {
		f.config.DropRequests--
		drop = true
	} else if f.config.FailRequests > 0 {
		f.config.FailRequests--
		status = f.config.FailStatus
	}
	if drop || status != 0 {
		f.stats.Requests++
		f.stats.Methods["(intercepted)"]++
	}
	f.mu.Unlock()

	if drop {
		if hijacker, ok := w.(http.Hijacker); ok {
			if conn, _, err := hijacker.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		status = http.StatusServiceUnavailable // HTTP/2 cannot be hijacked
	}
	if status != 0 {
		w.WriteHeader(status)
		return true
	}
	return false
}

func (f *faultState) snapshotFault(vm *VirtualMachine, quiesce bool) types.BaseMethodFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSnapshot == nil || !f.failSnapshot.MatchString(vm.Name) {
		return nil
	}
	if f.config.FailSnapshotQuiescedOnly && !quiesce {
		return nil
	}
	return snapshotFaults[f.config.FailSnapshotFault](vm)
}

func (f *faultState) taskDelay(name string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.config.TaskDelayMs <= 0 || (f.taskMatch != nil && !f.taskMatch.MatchString(name)) {
		return 0
	}
	return time.Duration(f.config.TaskDelayMs) * time.Millisecond
}

func (f *faultState) nfcStreamOptimized() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config.NfcFormat == "streamOptimized"
}

// nfcLeaseTimeout is the leaseTimeout of a new export lease, in seconds.
func (f *faultState) nfcLeaseTimeout() int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.config.NfcLeaseTimeout <= 0 {
		return 300
	}
	return int32(f.config.NfcLeaseTimeout)
}

func (f *faultState) refuseFlatReads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config.RefuseFlatReads
}

func (f *faultState) nfcBytesPerSecond() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config.NfcBytesPerSecond
}

func (f *faultState) nfcFailAfter() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config.NfcFailAfter
}

func (f *faultState) maxPage() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.config.MaxPage
}

// limitSession drops the request's session once it has served SessionCallLimit calls.
func (f *faultState) limitSession(c *Context) {
	f.mu.Lock()
	limit := f.config.SessionCallLimit
	f.mu.Unlock()
	if limit <= 0 || c.Session == nil || c.Session.CallCount <= int64(limit) {
		return
	}
	c.svc.sm.delSession(c.Session.Key)
	c.Session = nil

	f.mu.Lock()
	f.stats.SessionsTerminated++
	f.mu.Unlock()
}
