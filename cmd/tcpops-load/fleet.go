package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/rpc/client"
)

// fleetList opens n connections to each of the fleet's listeners, waits
// until every host tables them, and times tcpopsctl --nats --all-hosts
// list, as a table and with -o json, as fresh processes.
func fleetList(args []string) error {
	fs := flag.NewFlagSet("fleetlist", flag.ExitOnError)
	url := fs.String("nats", "nats://127.0.0.1:4222", "NATS URL of the fleet")
	addrs := fs.String("addrs", "", "the hosts' listeners, comma-separated")
	n := fs.Int("n", 3000, "connections to open to each")
	ctl := fs.String("ctl", "tcpopsctl", "tcpopsctl binary")
	rounds := fs.Int("rounds", 7, "timings to take of each")
	fs.Parse(args)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, a := range strings.Split(*addrs, ",") {
		for i := range *n {
			c, err := dialFrom(a, i%4)
			if err != nil {
				return fmt.Errorf("%s, connection %d: %w", a, i, err)
			}
			conns = append(conns, c)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fc, err := fleet.Connect(ctx, fleet.Options{URL: *url, Name: "tcpops-load"})
	if err != nil {
		return err
	}
	defer fc.Close()
	hosts, err := fc.Hosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		for {
			c := client.New(fc.Transport(h.Name), h.Name)
			st, err := c.Stats(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
			if st.Connections >= *n {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s tables %d connections, not %d", h.Name, st.Connections, *n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, mode := range [][]string{nil, {"-o", "json"}} {
		var ts []time.Duration
		args := append(append([]string{"--nats", *url, "--all-hosts"}, mode...), "list")
		for range *rounds {
			t := time.Now()
			cmd := exec.Command(*ctl, args...)
			cmd.Stdout = io.Discard
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("tcpopsctl %s: %w", strings.Join(args, " "), err)
			}
			ts = append(ts, time.Since(t))
		}
		fmt.Printf("fleet list: %d hosts x %d connections, tcpopsctl %s, whole process: median %s of %d (min %s, max %s)\n",
			len(hosts), *n, strings.Join(args, " "), median(ts), len(ts), minD(ts), maxD(ts))
	}
	return nil
}

func minD(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m.Round(10 * time.Microsecond)
}

func maxD(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(10 * time.Microsecond)
}

// burst opens n connections to one daemon, closes them all at once, and
// says when the daemon had closed them all (its last closed event's time,
// after the last FIN) and, with -nats, when the last event was stored in
// JetStream (the stream's time of it).
func burst(args []string) error {
	fs := flag.NewFlagSet("burst", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:7000", "listener to connect to")
	sock := fs.String("socket", "", "the daemon's control socket")
	n := fs.Int("n", 10000, "connections to open and close")
	url := fs.String("nats", "", "NATS URL, when the daemon runs with --nats")
	host := fs.String("host", "", "the daemon's --host-name, with -nats")
	pid := fs.Int("pid", 0, "the daemon's pid: report its CPU time for the burst")
	fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, *sock)
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := c.Stats(ctx)
	if err != nil {
		return err
	}
	base := st.EventSeq
	conns := make([]net.Conn, 0, *n)
	for i := range *n {
		// 16 sources: rounds of 10,000 leave their ports in TIME_WAIT.
		cn, err := dialFrom(*addr, i%16)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, cn)
	}
	for {
		if st, err = c.Stats(ctx); err != nil {
			return err
		}
		if st.Connections >= *n {
			break
		}
		if ctx.Err() != nil {
			return errors.New("the daemon did not table every connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cpu0 := cpu(*pid)
	first := time.Now()
	for _, cn := range conns {
		cn.Close()
	}
	lastFIN := time.Now()
	want := base + uint64(*n)
	for {
		if st, err = c.Stats(ctx); err != nil {
			return err
		}
		if st.EventSeq >= want && (*url == "" || st.NATS != nil && st.NATS.PublishedSeq >= want) {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("events: %d of %d in the ring, stats %+v", st.EventSeq-base, *n, st.NATS)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if *pid != 0 {
		fmt.Printf("burst: the daemon's CPU from the first FIN until all was done: %s\n", (cpu(*pid) - cpu0).Round(time.Millisecond))
	}
	evs, err := c.Events(ctx, rpc.EventsParams{Since: base})
	if err != nil || len(evs.Events) != *n {
		return fmt.Errorf("the burst's events: %d, %v", len(evs.Events), err)
	}
	last := evs.Events[len(evs.Events)-1].Time
	fmt.Printf("burst: %d FINs sent in %s; the daemon's closes from the first to the last took %s, the last %s after the last FIN (nats: %v)\n",
		*n, lastFIN.Sub(first).Round(time.Millisecond), last.Sub(evs.Events[0].Time).Round(time.Millisecond),
		last.Sub(lastFIN).Round(time.Millisecond), *url != "")
	if *url == "" {
		return nil
	}
	fc, err := fleet.Connect(ctx, fleet.Options{URL: *url, Name: "tcpops-load"})
	if err != nil {
		return err
	}
	defer fc.Close()
	js, err := jetstream.New(fc.NATS())
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, fleet.EventsStream)
	if err != nil {
		return err
	}
	m, err := s.GetLastMsgForSubject(ctx, fleet.EventsSubject(*host))
	if err != nil {
		return err
	}
	if seq := m.Header.Get(fleet.HeaderSeq); seq != fmt.Sprint(want) {
		return fmt.Errorf("the stream's last event of %s is seq %s, want %d", *host, seq, want)
	}
	fmt.Printf("burst: the last of %d events stored in JetStream %s after the daemon closed it, %s after the last FIN\n",
		*n, m.Time.Sub(last).Round(time.Millisecond), m.Time.Sub(lastFIN).Round(time.Millisecond))
	return nil
}
