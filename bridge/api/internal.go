package api

// InternalName is the principal name of requests on a trusted bus that sent no API key.
const InternalName = "internal"

// Internal returns the principal for requests from a trusted internal bus (NATS without
// require_key) that carry no API key: no per-key restrictions (it sees and controls
// every key's calls, like an admin key), but the same validation, server selection,
// ARI credential check and global limits as every request.
func (g *Gate) Internal() *Principal {
	return &Principal{Name: InternalName, key: &keyPolicy{Key: Key{Name: InternalName, Admin: true}}}
}
