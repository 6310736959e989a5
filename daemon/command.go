package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcpops/tcpops/conn"
	"github.com/tcpops/tcpops/fleet"
	"github.com/tcpops/tcpops/relay"
	"github.com/tcpops/tcpops/rpc"
	"github.com/tcpops/tcpops/sock"
)

// Options are the daemon's settings, filled from flags.
type Options struct {
	ConfigFile     string
	CheckConfig    bool
	Listen         []string
	Backend        string
	Socket         string
	SocketMode     string
	AdminGroup     string
	Lifetime       string
	Keepalive      string
	ClosedEvent    string
	MaxConns       int
	MaxConnsPerIP  int
	EventBuffer    int
	BackendTimeout time.Duration
	RPCIdleTimeout time.Duration
	MaxRPCClients  int
	TLSCert        string
	TLSKey         string
	EventLog       string
	Metrics        string
	LogFormat      string
	LogLevel       string
	FDStore        bool

	NATS               string
	NATSCreds          string
	NATSTLSCA          string
	HostName           string
	NATSStreamMaxAge   time.Duration
	NATSStreamMaxBytes int64
	NATSStreamReplicas int
}

// Config is Options checked and parsed.
type Config struct {
	Listeners  []relay.Listener
	Socket     string
	SocketMode os.FileMode
	AdminGroup string
	Table      conn.Config
	Relay      relay.Config
	// RPCWriteTimeout cuts off a control client that stops reading
	// (default 10s).
	RPCWriteTimeout time.Duration
	RPCIdleTimeout  time.Duration
	MaxRPCClients   int
	// EventLog is a file to append closed events to as NDJSON ("" none).
	EventLog string
	// Metrics is the HOST:PORT to serve Prometheus metrics on ("" none).
	Metrics string
	// FDStore keeps plain TCP connections in systemd's file-descriptor
	// store on SIGTERM (fdstore.go).
	FDStore bool
	// NATS links the daemon to a fleet (nil without --nats).
	NATS *NATSConfig
}

// NATSConfig is the daemon's link to NATS.
type NATSConfig struct {
	fleet.Options
	Host     string
	MaxAge   time.Duration
	MaxBytes int64
	Replicas int
}

// Parse checks every option and names the bad one.
func (o *Options) Parse() (*Config, error) {
	cfg := &Config{Socket: o.Socket, AdminGroup: o.AdminGroup}
	if err := relay.CheckBackend(o.Backend); err != nil {
		return nil, fmt.Errorf("--backend: %w", err)
	}
	if len(o.Listen) == 0 {
		return nil, errors.New("--listen: at least one listener is needed")
	}
	for _, raw := range o.Listen {
		l, err := relay.ParseListener(raw, o.Backend)
		if err != nil {
			return nil, fmt.Errorf("--listen: %w", err)
		}
		cfg.Listeners = append(cfg.Listeners, l)
	}
	if cfg.Socket == "" {
		cfg.Socket = sock.DefaultSocketPath()
	}
	mode, err := strconv.ParseUint(o.SocketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return nil, fmt.Errorf("--socket-mode %q: want an octal file mode such as 0660", o.SocketMode)
	}
	cfg.SocketMode = os.FileMode(mode)
	lt, err := rpc.ParseSeconds(o.Lifetime)
	if err != nil {
		return nil, fmt.Errorf("--lifetime: %w", err)
	}
	ka, err := sock.ParseKeepalive(o.Keepalive)
	if err != nil {
		return nil, fmt.Errorf("--keepalive: %w", err)
	}
	mode2, err := conn.ParseMode(o.ClosedEvent)
	if err != nil {
		return nil, fmt.Errorf("--closed-event: %w", err)
	}
	for _, n := range []struct {
		flag string
		v    int
		min  int
	}{{"--max-conns", o.MaxConns, 0}, {"--max-conns-per-ip", o.MaxConnsPerIP, 0}, {"--event-buffer", o.EventBuffer, 1}} {
		if n.v < n.min {
			return nil, fmt.Errorf("%s %d: must be >= %d", n.flag, n.v, n.min)
		}
	}
	if o.BackendTimeout <= 0 {
		return nil, fmt.Errorf("--backend-timeout %s: must be > 0", o.BackendTimeout)
	}
	if o.RPCIdleTimeout <= 0 {
		return nil, fmt.Errorf("--rpc-idle-timeout %s: must be > 0", o.RPCIdleTimeout)
	}
	if o.MaxRPCClients < 1 {
		return nil, fmt.Errorf("--max-rpc-clients %d: must be >= 1", o.MaxRPCClients)
	}
	cfg.RPCIdleTimeout, cfg.MaxRPCClients = o.RPCIdleTimeout, o.MaxRPCClients
	cfg.EventLog = o.EventLog
	if o.Metrics != "" {
		if _, _, err := net.SplitHostPort(o.Metrics); err != nil {
			return nil, fmt.Errorf("--metrics %q: want HOST:PORT, such as 127.0.0.1:9464", o.Metrics)
		}
	}
	cfg.Metrics = o.Metrics
	cfg.FDStore = o.FDStore
	if cfg.NATS, err = o.parseNATS(); err != nil {
		return nil, err
	}
	cfg.Table = conn.Config{Lifetime: lt, ClosedEvent: mode2, EventBuffer: o.EventBuffer,
		MaxConns: o.MaxConns, MaxConnsPerIP: o.MaxConnsPerIP}
	cfg.Relay = relay.Config{Keepalive: ka, DialTimeout: o.BackendTimeout, TLSCert: o.TLSCert, TLSKey: o.TLSKey}
	return cfg, nil
}

// parseNATS checks the --nats flags (nil, nil without --nats).
func (o *Options) parseNATS() (*NATSConfig, error) {
	if o.NATS == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{{"--nats-creds", o.NATSCreds != ""}, {"--nats-tls-ca", o.NATSTLSCA != ""}, {"--host-name", o.HostName != ""}} {
			if f.set {
				return nil, fmt.Errorf("%s: only with --nats", f.name)
			}
		}
		return nil, nil
	}
	for u := range strings.SplitSeq(o.NATS, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, pu.Scheme) {
			return nil, fmt.Errorf("--nats %q: want nats://HOST:PORT (or tls://, ws://, wss://), several separated by commas", fleet.Redact(u))
		}
	}
	for _, f := range []struct{ flag, path string }{{"--nats-creds", o.NATSCreds}, {"--nats-tls-ca", o.NATSTLSCA}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	host := o.HostName
	if host == "" {
		h, err := fleet.DefaultHost()
		if err != nil {
			return nil, fmt.Errorf("--host-name: the machine's name does not do (%v); set --host-name", err)
		}
		host = h
	}
	if err := fleet.CheckHost(host); err != nil {
		return nil, fmt.Errorf("--host-name: %w", err)
	}
	switch {
	case o.NATSStreamMaxAge < 0:
		return nil, fmt.Errorf("--nats-stream-max-age %s: must be >= 0 (0 = no limit)", o.NATSStreamMaxAge)
	case o.NATSStreamMaxBytes < 0:
		return nil, fmt.Errorf("--nats-stream-max-bytes %d: must be >= 0 (0 = no limit)", o.NATSStreamMaxBytes)
	case o.NATSStreamReplicas < 1 || o.NATSStreamReplicas > 5:
		return nil, fmt.Errorf("--nats-stream-replicas %d: want 1 to 5", o.NATSStreamReplicas)
	}
	return &NATSConfig{Options: fleet.Options{URL: o.NATS, Creds: o.NATSCreds, CA: o.NATSTLSCA}, Host: host,
		MaxAge: o.NATSStreamMaxAge, MaxBytes: o.NATSStreamMaxBytes, Replicas: o.NATSStreamReplicas}, nil
}

// NewLogger builds the daemon's logger.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// ParseArgs parses daemon flags (and the --config file they name)
// without running anything.
func ParseArgs(args []string) (*Config, error) {
	o := &Options{}
	cmd := &cobra.Command{}
	addFlags(cmd, o)
	if err := cmd.ParseFlags(args); err != nil {
		return nil, err
	}
	if cmd.Flags().NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", cmd.Flags().Args())
	}
	return parse(cmd.Flags(), o)
}

// parse applies the --config file to the flags not given, then checks all.
func parse(fs *pflag.FlagSet, o *Options) (*Config, error) {
	lines := map[string]int{}
	if o.ConfigFile != "" {
		if err := applyFile(fs, o.ConfigFile, lines); err != nil {
			return nil, err
		}
	}
	cfg, err := o.Parse()
	if err != nil && o.ConfigFile != "" {
		err = withLine(err, o.ConfigFile, lines)
	}
	return cfg, err
}

// NewCommand builds the tcpops command.
func NewCommand() *cobra.Command {
	o := &Options{}
	cmd := &cobra.Command{
		Use:   "tcpops",
		Short: "Relay TCP connections and steer each one live (keepalive, idle lifetime, closed events)",
		Long: `tcpops accepts TCP, TLS, WebSocket (ws) and secure WebSocket (wss) connections on
its listeners and relays each one to a backend (or to the built-in echo backend).
Every connection, inbound and the outbound leg to its backend, sits in a
connection table under a numeric id (conid) with Kamailio's tcp_conid_state
numbers, a per-connection idle lifetime and kernel keepalive, and leaves a closed
event with its reason when it ends.

Operators inspect and steer connections through JSON-RPC 2.0 on a Unix socket,
most easily with tcpopsctl.

Listener options: a --listen URL is tcp://HOST:PORT, tls://HOST:PORT,
ws://HOST:PORT/PATH or wss://HOST:PORT/PATH, with these query options:
  backend=HOST:PORT|echo   where to relay (default --backend)
  name=NAME                what the connection table calls the listener
  proxy_protocol=v1|v2     send a PROXY protocol header to the backend first
  accept_proxy=v1|v2|any   every connection starts with a PROXY protocol header from a
                           balancer: remote is the client it names, via the balancer
  proxy_from=CIDR,...      with accept_proxy: balancers allowed to send it (default any)
  cert=FILE, key=FILE      tls and wss: certificate and key (default --tls-cert, --tls-key)
  tls_min=1.2|1.3          tls and wss: lowest TLS version (default 1.2, AEAD suites only)
  origin=PATTERN,...       ws and wss: Origin hosts allowed besides the request's own
  subprotocol=NAME,...     ws and wss: subprotocols spoken; the client's first offer listed is answered
  subprotocol_required=true
                           ws and wss: refuse (400) a client that offers none of them
  frame=binary|text|sip    ws and wss: how backend bytes become messages: binary, one per read;
                           text, one per read, never splitting a UTF-8 character (bytes that are
                           not UTF-8 go binary); sip, one whole SIP message each (RFC 7118)
  max_message=BYTES        ws and wss: largest message (default 65536; over it: close 1009);
                           with frame=sip also the largest SIP message from the backend
  ping=DURATION            ws and wss: ping interval; a missing pong closes with reason timeout
  lifetime=DUR, keepalive=SPEC, max_conns=N
                           this listener's idle lifetime, keepalive and most inbound connections

Signals: SIGTERM and SIGINT stop accepting, close every connection with reason
"shutdown", deliver those events to followers (and the event log), remove the
socket and exit 0. SIGHUP reloads the configuration; SIGUSR1 reopens the
--event-log file, for log rotation.

Fleet: with --nats the daemon joins a fleet on NATS under --host-name. Every
closed event is stored in the JetStream stream TCPOPS_EVENTS, subject
tcpops.events.HOST (message id HOST:BOOT:SEQ; while NATS is away the events wait
in the ring and are stored in order when it is back, a tcpops.events_lost
record standing for any the ring overwrote), and the control methods are
served as the NATS micro service tcpops: read-only ones on tcpops.rpc.HOST,
all on tcpops.admin.HOST. tcpopsctl --nats reaches them. The NATS flags take
effect at start.

Files: the control socket, by default $TCPOPS_SOCKET, else /run/tcpops/tcpops.sock
for root (/run/tcpops is created if missing), else $XDG_RUNTIME_DIR/tcpops.sock,
else /tmp/tcpops-UID.sock. The manual page tcpops(8) has all of it.`,
		Example: `  # echo server on 127.0.0.1:5060, the defaults
  tcpops

  # relay SIP over TCP to a backend; close connections idle for 10 min
  tcpops --listen tcp://0.0.0.0:5060 --backend 10.0.0.5:5060 \
         --lifetime 10m

  # two listeners, one to echo; keepalive 60 s idle, 5 probes 5 s apart
  tcpops --listen 'tcp://127.0.0.1:7000?backend=echo&name=test' \
         --listen 'tcp://127.0.0.1:5060?backend=10.0.0.5:5060' \
         --keepalive 60,5,5

  # SIP over secure WebSocket (WebRTC clients) to a TCP SIP server:
  # subprotocol sip, one SIP message per WebSocket message
  tcpops --tls-cert cert.pem --tls-key key.pem --listen \
    'wss://:8443/sip?backend=10.0.0.5:5060&subprotocol=sip&frame=sip'

  # SIP over TCP behind HAProxy (send-proxy-v2); the backend is told the
  # client by a PROXY v1 header (Kamailio: tcp_accept_haproxy=yes)
  tcpops --backend 10.0.0.5:5060 --listen \
    'tcp://:5060?accept_proxy=v2&proxy_from=10.0.0.0/8&proxy_protocol=v1'

  # one host of a fleet: closed events to JetStream, methods over NATS
  tcpops --listen tcp://:5060 --nats nats://nats1:4222 \
         --nats-creds /etc/tcpops/nats.creds`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := parse(cmd.Flags(), o)
			if err != nil {
				return usageError{err}
			}
			if o.CheckConfig {
				// What the start would load: certificates and keys.
				for _, l := range cfg.Listeners {
					if err := relay.CheckTLS(l, cfg.Relay.TLSCert, cfg.Relay.TLSKey); err != nil {
						return err
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "configuration ok: %d listener(s), socket %s\n", len(cfg.Listeners), cfg.Socket)
				printListeners(cmd.OutOrStdout(), cfg.Listeners)
				return nil
			}
			log, err := NewLogger(cmd.ErrOrStderr(), o.LogFormat, o.LogLevel)
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			args := os.Args[1:]
			return Run(ctx, cfg, log, func() (*Config, error) { return ParseArgs(args) })
		},
	}
	addFlags(cmd, o)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	cmd.Version = rpc.Build().String()
	cmd.SetVersionTemplate("tcpops {{.Version}}\n")
	return cmd
}

func addFlags(cmd *cobra.Command, o *Options) {
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&o.ConfigFile, "config", "", "YAML file of settings (the long flag names); flags given here win; SIGHUP reloads it")
	f.BoolVar(&o.CheckConfig, "check-config", false, "check the configuration (file and flags), say what is wrong with line numbers, and exit")
	f.StringArrayVar(&o.Listen, "listen", []string{"tcp://127.0.0.1:5060"}, "listener URL, repeatable: tcp|tls|ws|wss://HOST:PORT[/PATH], with query options such as ?backend=HOST:PORT|echo&name=NAME (see Listener options)")
	f.StringVar(&o.Backend, "backend", relay.Echo, "default backend of listeners: HOST:PORT or echo")
	f.StringVarP(&o.Socket, "socket", "s", "", "control socket path (default $TCPOPS_SOCKET, /run/tcpops/tcpops.sock for root, $XDG_RUNTIME_DIR/tcpops.sock, /tmp/tcpops-UID.sock)")
	f.StringVar(&o.SocketMode, "socket-mode", "0660", "file mode of the control socket (octal)")
	f.StringVar(&o.AdminGroup, "admin-group", "", "group whose members may change connections (root and the daemon's user always may)")
	f.StringVar(&o.Lifetime, "lifetime", "120s", "default idle lifetime of a connection (0 = none); seconds or a duration such as 2m")
	f.StringVar(&o.Keepalive, "keepalive", "on", "TCP keepalive of every socket: off, on (kernel defaults) or IDLE,COUNT,INTERVAL in seconds")
	f.StringVar(&o.ClosedEvent, "closed-event", "all", "closed events for: all connections, manual (enabled one by one), off")
	f.IntVar(&o.MaxConns, "max-conns", 0, "most inbound connections at once (0 = no limit)")
	f.IntVar(&o.MaxConnsPerIP, "max-conns-per-ip", 0, "most inbound connections at once from one IP (0 = no limit)")
	f.IntVar(&o.EventBuffer, "event-buffer", 65536, "closed events kept for replay (ring size)")
	f.DurationVar(&o.BackendTimeout, "backend-timeout", 5*time.Second, "time allowed to connect to a backend")
	f.DurationVar(&o.RPCIdleTimeout, "rpc-idle-timeout", 5*time.Minute, "close a control client that sends no request for this long (events followers excepted)")
	f.IntVar(&o.MaxRPCClients, "max-rpc-clients", 1024, "most control clients at once; more are refused")
	f.StringVar(&o.TLSCert, "tls-cert", "", "certificate file (PEM) for tls:// and wss:// listeners without ?cert=")
	f.StringVar(&o.TLSKey, "tls-key", "", "private key file (PEM) for tls:// and wss:// listeners without ?key=")
	f.StringVar(&o.Metrics, "metrics", "", "serve Prometheus metrics at http://HOST:PORT/metrics")
	f.StringVar(&o.EventLog, "event-log", "", "append every closed event to this file, one JSON object a line (reopened on SIGUSR1)")
	f.BoolVar(&o.FDStore, "fd-store", false, "on SIGTERM under systemd, keep the listeners and plain TCP connections in its file-descriptor store for the next start (unit: FileDescriptorStoreMax=); SIGINT always closes them")
	f.StringVar(&o.NATS, "nats", "", "join a fleet on NATS: server URL(s), comma-separated (nats://HOST:4222); closed events go to JetStream, methods are served on tcpops.rpc.HOST and tcpops.admin.HOST")
	f.StringVar(&o.NATSCreds, "nats-creds", "", "NATS credentials file (.creds)")
	f.StringVar(&o.NATSTLSCA, "nats-tls-ca", "", "PEM file of the CAs of tls:// NATS servers")
	f.StringVar(&o.HostName, "host-name", "", "the daemon's name in the fleet, a NATS subject token (default the host name up to its first dot)")
	f.DurationVar(&o.NATSStreamMaxAge, "nats-stream-max-age", 7*24*time.Hour, "oldest closed events kept in the TCPOPS_EVENTS stream, when it is created (0 = no limit)")
	f.Int64Var(&o.NATSStreamMaxBytes, "nats-stream-max-bytes", 1<<30, "bytes of closed events kept in the TCPOPS_EVENTS stream, when it is created (0 = no limit)")
	f.IntVar(&o.NATSStreamReplicas, "nats-stream-replicas", 1, "replicas of the streams, when they are created (a JetStream cluster)")
	f.StringVar(&o.LogFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// Main runs tcpops and returns its exit code: 0 after a clean shutdown,
// 2 for bad flags, 1 for anything else.
func Main() int {
	cmd := NewCommand()
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tcpops:", err)
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintln(os.Stderr, "run 'tcpops --help' for usage")
			return 2
		}
		return 1
	}
	return 0
}
