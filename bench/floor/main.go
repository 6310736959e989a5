// Command floor is the least a client of the control socket can do: dial
// it, send one tcpops.state request as one line of JSON-RPC 2.0, read the
// one-line answer and print it. It is the floor tcpopsctl state is
// measured against (BENCHMARKS.md, "CLI start-up against the floor"):
//
//	CGO_ENABLED=0 go build -o floor ./bench/floor
//	floor -socket /run/tcpops/tcpops.sock -conid 1
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	path := flag.String("socket", "/run/tcpops/tcpops.sock", "control socket")
	conid := flag.Uint64("conid", 1, "connection id")
	flag.Parse()
	c, err := net.DialTimeout("unix", *path, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(3)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, `{"jsonrpc":"2.0","id":1,"method":"tcpops.state","params":{"conid":%d}}`+"\n", *conid)
	line, err := bufio.NewReader(c).ReadSlice('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(3)
	}
	os.Stdout.Write(line)
}
