package relay

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"
)

func TestStressRelayBytes(t *testing.T) {
	if os.Getenv("TCPOPS_STRESS") == "" {
		t.Skip("set TCPOPS_STRESS=1")
	}
	be, _ := net.Listen("tcp", "127.0.0.1:0")
	defer be.Close()
	go func() {
		for {
			c, err := be.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.(*net.TCPConn).CloseWrite(); io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	echo := startFuzzRelay(t, "tcp://127.0.0.1:0?backend=echo")
	pair := startFuzzRelay(t, "tcp://127.0.0.1:0?backend="+be.Addr().String())
	n, max := 3000, 100000
	if os.Getenv("TCPOPS_STRESS") == "small" {
		n, max = 30000, 64
	}
	for i := range n {
		data := make([]byte, rand.IntN(max))
		for j := range data {
			data[j] = byte(rand.IntN(256))
		}
		for _, addr := range []string{echo, pair} {
			t0 := time.Now()
			src := &net.TCPAddr{IP: net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))}
			d := net.Dialer{LocalAddr: src}
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			go func() {
				c.Write(data)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			c.Close()
			if d := time.Since(t0); d > 20*time.Millisecond {
				t.Logf("iteration %d via %s (echo %v), %d bytes: %v", i, addr, addr == echo, len(data), d)
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("iteration %d via %s (echo %v): %d bytes back (err %v), want %d", i, addr, addr == echo, len(got), err, len(data))
			}
		}
	}
}
