package conn

// WSInfo is what a WebSocket connection's upgrade request asked for and
// got: the request path, the subprotocol answered ("" for none) and the
// Origin header.
type WSInfo struct {
	Path, Subprotocol, Origin string
}

// SetWS records the WebSocket details of an upgraded connection.
func (c *Conn) SetWS(ws WSInfo) {
	c.mu.Lock()
	c.ws = &ws
	c.mu.Unlock()
}
