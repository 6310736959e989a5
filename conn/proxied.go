package conn

import (
	"net/netip"
)

// SetClient replaces the remote address of a connection added with
// AwaitClient by the client's, as a PROXY protocol header named it, and
// keeps the balancer's as via; the client now counts for
// max-conns-per-ip. A *LimitError says the client is over that limit (the
// caller closes the connection: its event names the client all the same);
// ErrClosed that it is closing.
func (c *Conn) SetClient(client, via netip.AddrPort) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return ErrClosed
	}
	c.remote = client
	c.extW().via = via
	if c.Direction == DirIn && !c.countedIP.IsValid() {
		ip := client.Addr().Unmap()
		c.t.limMu.Lock()
		err := c.t.admitIPLocked(c.t.cfg.Load(), ip)
		c.t.limMu.Unlock()
		if err != nil {
			c.t.rejected.Add(1)
			return err
		}
		c.countedIP = ip
	}
	return nil
}
