// Package api is the shared core of invokeari's front doors (HTTP and NATS): one request
// type (Fields), one decoder (DecodeBody), one validation and key policy (Gate.Build),
// one admission control (Gate.Admit) and one error mapping and reply envelope
// (Error, FromOriginateError, Success, Failure), and the same for call control
// (GetCall, ListCalls, HangupCall: decoding, key scoping, replies). A rule written twice
// is a bug, so the doors only carry bytes in and out; every decision about a request is
// made here.
//
// The package does no I/O of its own: no server, no NATS, no ARI (call control reaches
// the App through the small CallControl interface). It imports net/http only for status
// constants.
package api
