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
	c.extW().ws = &ws
	c.mu.Unlock()
}

// TLSInfo describes a TLS session, as an operator checks it.
type TLSInfo struct {
	Version     string // "TLS 1.3"
	Cipher      string // "TLS_AES_128_GCM_SHA256"
	SNI         string // the server name the client asked for
	ALPN        string // the protocol agreed on, if any
	PeerSubject string // the client certificate's subject, if one was sent
}

// SetTLS records the TLS session of the connection after its handshake.
func (c *Conn) SetTLS(t TLSInfo) {
	c.mu.Lock()
	c.extW().tls = &t
	c.mu.Unlock()
}
