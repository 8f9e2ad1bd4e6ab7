package httpdoor

import (
	_ "embed"
	"net/http"
)

// OpenAPI is the OpenAPI 3.1 document of every route of the door, the status callback
// payload and the call webhook payloads (SPEC §8, §9). TestOpenAPI keeps it true to the
// handlers.
//
//go:embed openapi.json
var OpenAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(OpenAPI) // the client may be gone; nothing left to tell it
}
