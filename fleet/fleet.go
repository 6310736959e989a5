// Package fleet is what tcpops daemons and tcpopsctl share over NATS: the
// subjects, streams and headers, the framing of JSON-RPC requests and
// replies on NATS request/reply, and the client side (finding the hosts,
// calling one, reading the events stream).
package fleet

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tcpops/tcpops/rpc"
)

// Names on NATS.
const (
	// ServiceName is the NATS micro service every daemon runs, one
	// instance per host (nats micro ls shows them).
	ServiceName = "tcpops"
	// EventsStream is the JetStream stream of closed events, over
	// tcpops.events.> (one subject per host).
	EventsStream = "TCPOPS_EVENTS"
	// HostsStream keeps the newest registration of every host on
	// tcpops.hosts.HOST, so that a host that stops answering is missed.
	HostsStream = "TCPOPS_HOSTS"
	// HostsMaxAge is how long a host that went away without saying so
	// (killed, lost) stays registered.
	HostsMaxAge = 24 * time.Hour

	eventsPrefix = "tcpops.events."
	rpcPrefix    = "tcpops.rpc."
	adminPrefix  = "tcpops.admin."
	hostsPrefix  = "tcpops.hosts."
)

// Headers of tcpops messages on NATS.
const (
	// HeaderCaller and HeaderUser say who calls (the login and machine,
	// and the NATS user), for the daemon's audit log. They are what the
	// caller states: who may call what is decided by nats-server.
	HeaderCaller = "Tcpops-Caller"
	HeaderUser   = "Tcpops-Nats-User"
	// HeaderAdminOnly marks a -32003 reply of the read subject: the
	// method changes connections and is served on tcpops.admin.HOST.
	HeaderAdminOnly = "Tcpops-Admin-Only"
	// HeaderChunks, on the first message of a reply, is the number of
	// messages it was cut into (absent: one).
	HeaderChunks = "Tcpops-Chunks"
	// HeaderAcceptEncoding and HeaderEncoding: a caller that takes gzip
	// says so; a large reply to it is compressed and says so.
	HeaderAcceptEncoding = "Accept-Encoding"
	HeaderEncoding       = "Content-Encoding"
	// HeaderSeq, HeaderBoot and HeaderHost are on every message of the
	// events stream: the last seq it covers, the daemon's run and host.
	HeaderSeq  = "Tcpops-Seq"
	HeaderBoot = "Tcpops-Boot"
	HeaderHost = "Tcpops-Host"
	// HeaderMsgID is JetStream's deduplication id: HOST:BOOT:SEQ.
	HeaderMsgID = "Nats-Msg-Id"
)

// EventsSubject is the subject of a host's closed events.
func EventsSubject(host string) string { return eventsPrefix + host }

// EventsSubjects is the subject of the events stream, every host.
const EventsSubjects = eventsPrefix + ">"

// RPCSubject serves a host's read-only methods.
func RPCSubject(host string) string { return rpcPrefix + host }

// AdminSubject serves every method of a host.
func AdminSubject(host string) string { return adminPrefix + host }

// HostSubject holds a host's registration.
func HostSubject(host string) string { return hostsPrefix + host }

// HostsSubjects is the subject of the hosts stream.
const HostsSubjects = hostsPrefix + "*"

// HostOf is the host of an events or hosts subject ("" if neither).
func HostOf(subject string) string {
	for _, p := range []string{eventsPrefix, hostsPrefix} {
		if h, ok := strings.CutPrefix(subject, p); ok {
			return h
		}
	}
	return ""
}

// CheckHost says what is wrong with a host name: it is one token of a NATS
// subject, so letters, digits, '-' and '_' only.
func CheckHost(name string) error {
	if name == "" {
		return errors.New("empty host name")
	}
	if len(name) > 64 {
		return fmt.Errorf("host name %q: longer than 64 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("host name %q: want letters, digits, - and _ only (it is a token of NATS subjects; %q is not allowed)", name, r)
		}
	}
	return nil
}

// DefaultHost is the machine's host name up to its first dot (hostname -s).
func DefaultHost() (string, error) {
	h, err := os.Hostname()
	if err != nil {
		return "", err
	}
	h, _, _ = strings.Cut(h, ".")
	return h, CheckHost(h)
}

// Record is one message of the events stream as readers decode it: a
// closed event (the JSON of tcpops.events) with its host and the daemon's
// run, or, when Event is tcpops.events_lost, the seqs FromSeq..ToSeq of
// that run that the daemon's ring overwrote before they could be stored.
type Record struct {
	Host string `json:"host"`
	Boot string `json:"boot"`
	rpc.Event
	FromSeq uint64 `json:"from_seq,omitempty"`
	ToSeq   uint64 `json:"to_seq,omitempty"`
}

// Lost reports whether the record is a tcpops.events_lost record.
func (r *Record) Lost() bool { return r.Event.Event == rpc.NotifyEventsLost }

// EventRecord is a closed event as the daemon stores it.
type EventRecord struct {
	Host string `json:"host"`
	Boot string `json:"boot"`
	rpc.Event
}

// LostRecord is stored in place of events the ring overwrote.
type LostRecord struct {
	Host    string    `json:"host"`
	Boot    string    `json:"boot"`
	Event   string    `json:"event"` // tcpops.events_lost
	Time    time.Time `json:"time"`
	FromSeq uint64    `json:"from_seq"`
	ToSeq   uint64    `json:"to_seq"`
}

// Registration is what a daemon stores on tcpops.hosts.HOST.
type Registration struct {
	Host    string    `json:"host"`
	Boot    string    `json:"boot"`
	Started time.Time `json:"started"`
	Version string    `json:"version"`
	PID     int       `json:"pid"`
}
