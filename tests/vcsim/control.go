package main

import (
	"encoding/json"
	"net/http"

	"github.com/vmware/govmomi/simulator"
)

const controlPrefix = "/vmkeep"

// controlMux serves the test control API next to /sdk (same TLS listener, no login):
//
//	GET  /vmkeep/faults               the fault configuration (simulator.FaultConfig)
//	POST /vmkeep/faults               change it: the JSON fields given replace the current ones
//	                                  (failRequests/dropRequests count down as requests come)
//	GET|POST /vmkeep/restore-faults   restore faults (simulator.RestoreFaultConfig): failUploadAfter,
//	                                  failMethod, failMethodSkip, failMethodCount
//	GET  /vmkeep/stats                {"requests", "methods": {name: n}, "sessionsTerminated"}
//	POST /vmkeep/stats/reset          zero the counters
//	POST /vmkeep/sessions/terminate   end every SOAP session now: {"terminated": n}
//	GET  /vmkeep/leases               every export lease since start: [simulator.LeaseRecord]
//	POST /vmkeep/leases/reset         forget the leases that have ended
func controlMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc(controlPrefix+"/faults", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			reply(w, http.StatusOK, simulator.Faults.Config())
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			config := simulator.Faults.Config()
			decoder := json.NewDecoder(r.Body)
			decoder.DisallowUnknownFields()
			if err := decoder.Decode(&config); err != nil {
				reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			if err := simulator.Faults.Set(config); err != nil {
				reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			reply(w, http.StatusOK, simulator.Faults.Config())
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	})
	mux.HandleFunc(controlPrefix+"/restore-faults", func(w http.ResponseWriter, r *http.Request) {
		config := simulator.RestoreFaults.Config()
		if r.Method != http.MethodGet {
			decoder := json.NewDecoder(r.Body)
			decoder.DisallowUnknownFields()
			if err := decoder.Decode(&config); err != nil {
				reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
			if err := simulator.RestoreFaults.Set(config); err != nil {
				reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
				return
			}
		}
		reply(w, http.StatusOK, simulator.RestoreFaults.Config())
	})
	mux.HandleFunc(controlPrefix+"/stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, simulator.Faults.Stats())
	})
	mux.HandleFunc(controlPrefix+"/stats/reset", post(func(w http.ResponseWriter) {
		simulator.Faults.ResetStats()
		reply(w, http.StatusOK, simulator.Faults.Stats())
	}))
	mux.HandleFunc(controlPrefix+"/sessions/terminate", post(func(w http.ResponseWriter) {
		reply(w, http.StatusOK, map[string]int{"terminated": simulator.Faults.TerminateSessions()})
	}))
	mux.HandleFunc(controlPrefix+"/leases", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, simulator.Leases())
	})
	mux.HandleFunc(controlPrefix+"/leases/reset", post(func(w http.ResponseWriter) {
		simulator.ResetLeases()
		reply(w, http.StatusOK, simulator.Leases())
	}))
	return mux
}

func post(f func(http.ResponseWriter)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		f(w)
	}
}

func reply(w http.ResponseWriter, status int, body interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
