/*
vmkeep patch 4 (new file): PropertyCollector paging.

The 0.24.2 simulator ignores RetrieveOptions.maxObjects, never returns a token and does not
implement ContinueRetrievePropertiesEx, so clients' paging code would never run against it.
This file keeps the rest of a result set under a token, as vCenter does, and serves it page by
page. Faults.MaxPage (if set) caps the page size below the client's maxObjects, the way a
real vCenter may return fewer objects than asked for.
*/

package simulator

import (
	"strconv"
	"sync"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// maxPendingResults bounds the results kept for clients that never finish paging.
const maxPendingResults = 1000

type pendingResult struct {
	objects []types.ObjectContent
	size    int
}

var pages = struct {
	sync.Mutex
	next    int
	pending map[string]*pendingResult
	order   []string
}{pending: make(map[string]*pendingResult)}

func pageSize(options types.RetrieveOptions) int {
	size := int(options.MaxObjects)
	if size <= 0 {
		return 0 // no paging asked for
	}
	if limit := Faults.maxPage(); limit > 0 && limit < size {
		size = limit
	}
	return size
}

// takePage cuts the first page off objects and keeps the rest under a new token.
func takePage(objects []types.ObjectContent, size int) ([]types.ObjectContent, string) {
	if size <= 0 || len(objects) <= size {
		return objects, ""
	}
	pages.Lock()
	defer pages.Unlock()
	pages.next++
	token := "vmkeep-page-" + strconv.Itoa(pages.next)
	pages.pending[token] = &pendingResult{objects: objects[size:], size: size}
	pages.order = append(pages.order, token)
	for len(pages.order) > maxPendingResults {
		delete(pages.pending, pages.order[0])
		pages.order = pages.order[1:]
	}
	return objects[:size], token
}

func (pc *PropertyCollector) vmkeepFirstPage(res *types.RetrieveResult, options types.RetrieveOptions) *types.RetrieveResult {
	res.Objects, res.Token = takePage(res.Objects, pageSize(options))
	return res
}

func (pc *PropertyCollector) ContinueRetrievePropertiesEx(ctx *Context, req *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := new(methods.ContinueRetrievePropertiesExBody)

	pages.Lock()
	rest, ok := pages.pending[req.Token]
	delete(pages.pending, req.Token)
	pages.Unlock()

	if !ok {
		body.Fault_ = Fault("unknown or expired token", &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}

	objects, token := takePage(rest.objects, rest.size)
	body.Res = &types.ContinueRetrievePropertiesExResponse{
		Returnval: types.RetrieveResult{Objects: objects, Token: token},
	}
	return body
}

func (pc *PropertyCollector) CancelRetrievePropertiesEx(ctx *Context, req *types.CancelRetrievePropertiesEx) soap.HasFault {
	pages.Lock()
	delete(pages.pending, req.Token)
	pages.Unlock()

	return &methods.CancelRetrievePropertiesExBody{Res: new(types.CancelRetrievePropertiesExResponse)}
}
