#!/usr/bin/env bash
# The figures of BENCHMARKS.md: tcpops and HAProxy (Debian's haproxy, as a
# TCP relay) side by side on this machine, against the same backend.
#   bench/compare.sh [idle|relay|iperf|tls|all]   (default all; ROUNDS=5 for 5 relay rounds)
# Needs haproxy (and iperf3 for iperf); uses ports 7000-7300 and 7650-7654 on 127.0.0.1. Every load is bounded:
# N connections, 1 GiB, 20,000 messages.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
PAIRS=${PAIRS:-9000}
ECHOS=${ECHOS:-19000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
export CGO_ENABLED=0
go build -o "$work/tcpops" ./cmd/tcpops
go build -o "$work/tcpopsctl" ./cmd/tcpopsctl
go build -o "$work/load" ./cmd/tcpops-load

"$work/load" serve -listen 127.0.0.1:7100 >/dev/null &
cat > "$work/haproxy.cfg" <<CFG
global
    maxconn 9950
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen relay
    bind 127.0.0.1:7200
    server backend 127.0.0.1:7100
listen iperf
    bind 127.0.0.1:7201
    server backend 127.0.0.1:7300
CFG
# One ECDSA P-256 certificate for both TLS listeners.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
	-keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"
cat >> "$work/haproxy.cfg" <<CFG
listen tls
    bind 127.0.0.1:7651 ssl crt $work/combined.pem ssl-min-ver TLSv1.3
    server backend 127.0.0.1:7100
listen wss
    bind 127.0.0.1:7654 ssl crt $work/combined.pem ssl-min-ver TLSv1.3
    server backend 127.0.0.1:7653
CFG

start_tcpops() { # listen args...
	rm -f "$work/s"
	"$work/tcpops" --socket "$work/s" --lifetime 0 --log-level warn "$@" &
	tp=$!
	for _ in $(seq 100); do [ -S "$work/s" ] && break; sleep 0.05; done
}
start_haproxy() {
	haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
	hp=$!
	sleep 0.5
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"

if [ "$what" = idle ] || [ "$what" = all ]; then
	echo "== tcpops, $PAIRS idle relayed pairs"
	start_tcpops --listen tcp://127.0.0.1:7000?backend=127.0.0.1:7100
	"$work/load" idle -addr 127.0.0.1:7000 -n "$PAIRS" -pid $tp -socket "$work/s" -ctl "$work/tcpopsctl"
	kill $tp; wait $tp || true
	echo "== haproxy, $PAIRS idle relayed pairs"
	start_haproxy
	"$work/load" idle -addr 127.0.0.1:7200 -n "$PAIRS" -pid $hp
	kill $hp; wait $hp || true
	echo "== tcpops, 10000 echo connections (the list figures)"
	start_tcpops --listen tcp://127.0.0.1:7001?backend=echo
	"$work/load" idle -addr 127.0.0.1:7001 -n 10000 -pid $tp -socket "$work/s" -ctl "$work/tcpopsctl"
	kill $tp; wait $tp || true
	echo "== tcpops, $ECHOS idle echo connections"
	start_tcpops --listen tcp://127.0.0.1:7001?backend=echo
	"$work/load" idle -addr 127.0.0.1:7001 -n "$ECHOS" -pid $tp -socket "$work/s" -ctl "$work/tcpopsctl"
	kill $tp; wait $tp || true
fi

if [ "$what" = relay ] || [ "$what" = all ]; then
	start_tcpops --listen tcp://127.0.0.1:7000?backend=127.0.0.1:7100
	start_haproxy
	for round in $(seq "${ROUNDS:-3}"); do
		echo "== round $round: direct"
		"$work/load" relay -addr 127.0.0.1:7100
		echo "== round $round: tcpops"
		"$work/load" relay -addr 127.0.0.1:7000
		echo "== round $round: haproxy"
		"$work/load" relay -addr 127.0.0.1:7200
	done
	kill $tp $hp; wait $tp $hp || true
fi

if { [ "$what" = iperf ] || [ "$what" = all ]; } && ! command -v iperf3 >/dev/null; then
	echo "iperf3 not installed (apt-get install iperf3): skipping the iperf3 figures"
elif [ "$what" = iperf ] || [ "$what" = all ]; then
	# iperf3, 10 s per measurement, rounds alternated: direct, tcpops,
	# HAProxy, for 1 and 64 streams.
	iperf3 -s -p 7300 >/dev/null 2>&1 &
	start_tcpops --listen tcp://127.0.0.1:7001?backend=127.0.0.1:7300
	start_haproxy
	mbps() { # port streams
		iperf3 -c 127.0.0.1 -p "$1" -t 10 -P "$2" -J |
			python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))'
	}
	ticks() { awk '{print $14+$15}' "/proc/$1/stat"; } # utime+stime, 100 a second
	# MB/s and the relay's CPU ticks for those 10 s, and ticks per GB.
	relayed() { # pid port streams
		local t0 mb t1
		t0=$(ticks "$1"); mb=$(mbps "$2" "$3"); t1=$(ticks "$1")
		echo "$mb MB/s, CPU $((t1 - t0)) ticks = $(((t1 - t0) * 1000 / (mb * 10 + 1))) ticks/GB"
	}
	for round in 1 2 3; do
		for p in 1 64; do
			echo "iperf3 round $round, $p stream(s): direct $(mbps 7300 $p) MB/s; tcpops $(relayed $tp 7001 $p); haproxy $(relayed $hp 7201 $p)"
		done
	done
	kill $tp $hp; wait $tp $hp || true
fi

if [ "$what" = tls ] || [ "$what" = all ]; then
	# Full TLS 1.3 handshakes (ECDSA P-256 certificate, X25519, no
	# resumption), a new connection each, 16 clients, 5 s; rounds
	# alternated. tcpops answers as the TLS echo; HAProxy terminates TLS
	# in front of the echo backend.
	# Then wss echo throughput, 256 MiB in 16 KiB binary messages, 8 in
	# flight: tcpops's wss echo against HAProxy terminating TLS in front of
	# tcpops's plain ws echo (HAProxy's CPU figure leaves out the
	# WebSocket framing, which its backend does).
	start_tcpops --listen tls://127.0.0.1:7650 --listen wss://127.0.0.1:7652/ws --listen ws://127.0.0.1:7653/ws \
		--tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
	start_haproxy
	for round in 1 2 3; do
		echo "tls round $round: tcpops: $("$work/load" tlsrate -addr 127.0.0.1:7650 -pid $tp)"
		echo "tls round $round: haproxy: $("$work/load" tlsrate -addr 127.0.0.1:7651 -pid $hp)"
	done
	for round in 1 2 3; do
		echo "wss round $round: tcpops: $("$work/load" wsecho -url wss://127.0.0.1:7652/ws -pid $tp)"
		echo "wss round $round: haproxy: $("$work/load" wsecho -url wss://127.0.0.1:7654/ws -pid $hp)"
	done
	kill $tp $hp; wait $tp $hp || true
fi
