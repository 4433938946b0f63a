// Command vcsim is vmkeep's vSphere simulator: govmomi's simulator package (Debian's, patched
// and extended at build time, see PATCHES.md) with a configurable inventory, a generated CA, required credentials and
// fault injection for tests. Start it through scripts/vcsim, which builds it and waits for
// the ready file; docs/simulator.md describes flags, the ready line and the control API.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // REST endpoints: tagging under /rest
	"github.com/vmware/govmomi/vim25"
)

// ready is written to STATE_DIR/ready.json (and printed) once the server accepts requests.
type ready struct {
	URL              string `json:"url"`
	CAFile           string `json:"caFile"`
	PID              int    `json:"pid"`
	Username         string `json:"username"`
	Password         string `json:"password"`
	Enforced         bool   `json:"credentialsEnforced"`
	Thumbprint       string `json:"thumbprint"`
	ThumbprintSHA256 string `json:"thumbprintSha256"`
	ControlURL       string `json:"controlUrl"`
	RestURL          string `json:"restUrl"`
	VMs              int    `json:"vms"`
	Hosts            int    `json:"hosts"`
	Clusters         int    `json:"clusters"`
	Datacenters      int    `json:"datacenters"`
	DataDir          string `json:"dataDir"`
	DatastoreType    string `json:"datastoreType,omitempty"`
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("vcsim: ")

	var l layout
	var faults simulator.FaultConfig
	address := flag.String("address", "127.0.0.2", "loopback address to listen on")
	port := flag.Int("port", 0, "port to listen on (0: any free port)")
	stateDir := flag.String("state-dir", "", "directory for ca.pem, ready.json and datastores (required)")
	username := flag.String("username", "", "user name Login requires (with -password; default: any user)")
	password := flag.String("password", os.Getenv("VCSIM_PASSWORD"), "password Login requires (default $VCSIM_PASSWORD; empty: any non-empty credentials work)")
	flag.IntVar(&l.datacenters, "datacenters", 1, "datacenters")
	flag.IntVar(&l.clusters, "clusters", 1, "clusters per datacenter (0: standalone hosts only)")
	flag.IntVar(&l.hosts, "hosts", 3, "hosts per cluster, or standalone hosts per datacenter with -clusters 0")
	flag.IntVar(&l.vms, "vms", 10, "VMs in total, spread over the clusters/standalone hosts")
	folders := flag.String("folders", "prod,prod/db,dev", "comma-separated VM folders under each datacenter's vm folder; VMs go round-robin into the root vm folder and these")
	flag.StringVar(&faults.FailSnapshot, "fail-snapshot", "", "regexp: CreateSnapshot fails for VMs whose name matches")
	flag.StringVar(&faults.FailSnapshotFault, "fail-snapshot-fault", "FileFault", "fault for -fail-snapshot (FileFault, NoDiskSpace, InvalidState, TaskInProgress, TooManySnapshotLevels, ApplicationQuiesceFault)")
	flag.BoolVar(&faults.FailSnapshotQuiescedOnly, "fail-snapshot-quiesced-only", false, "fail only snapshots requested with quiesce")
	flag.IntVar(&faults.TaskDelayMs, "task-delay", 0, "milliseconds tasks stay running before they do their work")
	flag.StringVar(&faults.TaskDelayMatch, "task-delay-match", "", "regexp on task names (e.g. CreateSnapshot_Task) -task-delay applies to; empty: all")
	flag.IntVar(&faults.SessionCallLimit, "session-call-limit", 0, "terminate each session after it served N calls (Login included)")
	flag.IntVar(&faults.MaxPage, "max-page", 0, "cap RetrievePropertiesEx pages at N objects (below the client's maxObjects)")
	datastoreType := flag.String("datastore-type", "", "vsan or vvol: every datastore reports that type and refuses reads of -flat.vmdk files (404)")
	toolsRunning := flag.Bool("tools-running", false, "every VM reports running, current VMware Tools (for quiesced snapshots)")
	latency := flag.Int("latency", 0, "delay every SOAP call by N ms, like a remote or busy vCenter")
	flag.Parse()

	if *stateDir == "" {
		log.Fatal("-state-dir is required")
	}
	if (*username == "") != (*password == "") {
		log.Fatal("give both -username and -password, or neither (then any credentials work)")
	}
	for _, f := range strings.Split(*folders, ",") {
		if f = strings.TrimSpace(f); f != "" {
			l.folders = append(l.folders, f)
		}
	}
	if err := simulator.Faults.Set(faults); err != nil {
		log.Fatal(err)
	}
	kinds := map[string]string{"": "", "vmfs": "", "vsan": "vsan", "vvol": "VVOL"}
	kind, ok := kinds[strings.ToLower(*datastoreType)]
	if !ok {
		log.Fatalf("-datastore-type: %q is not vsan or vvol", *datastoreType)
	}
	if *latency < 0 {
		log.Fatal("-latency must not be negative")
	}
	if err := run(l, *address, *port, *stateDir, *username, *password, *latency, kind, *toolsRunning); err != nil {
		log.Fatal(err)
	}
}

func run(l layout, address string, port int, stateDir, username, password string, latency int, datastoreType string, toolsRunning bool) error {
	stateDir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	// Every datastore is a temp dir: keep them all in one private directory, removed on exit.
	dataDir, err := os.MkdirTemp(stateDir, "data-")
	if err != nil {
		return err
	}
	if err := os.Setenv("TMPDIR", dataDir); err != nil {
		return err
	}

	var mu sync.Mutex
	var model *simulator.Model
	var server *simulator.Server
	cleanup := func() {
		mu.Lock() // never released: the process exits
		if server != nil {
			server.Close()
		}
		if model != nil {
			model.Remove()
		}
		_ = os.RemoveAll(dataDir)
		_ = os.Remove(filepath.Join(stateDir, "ready.json"))
	}
	// Registered before the inventory is built, so an early SIGTERM still removes the datastores.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		sig := <-signals
		log.Printf("%s: stopping", sig)
		building := !mu.TryLock()
		if building {
			// The model is being built and must not be touched; its files are under dataDir.
			_ = os.RemoveAll(dataDir)
			os.Exit(1)
		}
		mu.Unlock()
		cleanup()
		os.Exit(0)
	}()

	identity, err := newIdentity(address)
	if err != nil {
		return err
	}
	caFile := filepath.Join(stateDir, "ca.pem")
	if err := writeFileAtomic(caFile, identity.caPEM, 0o644); err != nil {
		return err
	}

	mu.Lock()
	m := l.model()
	if err := m.Create(); err != nil {
		mu.Unlock()
		cleanup()
		return err
	}
	model = m
	ctx := context.Background()
	client, err := vim25.NewClient(ctx, m.Service)
	if err == nil {
		err = addVMs(ctx, client, l)
	}
	if err != nil {
		mu.Unlock()
		cleanup()
		return err
	}

	simulator.SetDatastoreType(datastoreType)
	if toolsRunning {
		simulator.SetToolsRunning()
	}
	// The service points at the model's DelayConfig: set it once the inventory is built.
	m.DelayConfig.Delay = latency
	m.Service.RegisterEndpoints = true // vAPI (REST) tagging
	m.Service.Listen = &url.URL{Host: net.JoinHostPort(address, strconv.Itoa(port))}
	enforced := password != ""
	if enforced {
		m.Service.Listen.User = url.UserPassword(username, password)
	} else {
		username, password = "vmkeep", "vmkeep" // any non-empty pair works; report one
	}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{identity.tls}}
	m.Service.ServeMux = controlMux()
	server = m.Service.NewServer()
	mu.Unlock()

	base := url.URL{Scheme: server.URL.Scheme, Host: server.URL.Host}
	info := ready{
		URL:              base.String() + server.URL.Path,
		CAFile:           caFile,
		PID:              os.Getpid(),
		Username:         username,
		Password:         password,
		Enforced:         enforced,
		Thumbprint:       identity.thumbprintSHA1,
		ThumbprintSHA256: identity.thumbprintSHA256,
		ControlURL:       base.String() + controlPrefix,
		RestURL:          base.String() + "/rest",
		VMs:              countVMs(),
		Hosts:            len(simulator.Map.All("HostSystem")),
		Clusters:         len(simulator.Map.All("ClusterComputeResource")),
		Datacenters:      len(simulator.Map.All("Datacenter")),
		DataDir:          dataDir,
		DatastoreType:    datastoreType,
	}
	line, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(stateDir, "ready.json"), append(line, '\n'), 0o600); err != nil {
		cleanup()
		return err
	}
	fmt.Println(string(line))
	log.Printf("serving %s with %d VMs", info.URL, info.VMs)
	select {} // until a signal
}
