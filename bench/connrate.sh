#!/usr/bin/env bash
# Connection rate: new relayed connections per second and the relay's CPU
# per connection, tcpops and HAProxy (a plain TCP relay, 2 threads) side by
# side, rounds alternated, in front of the same HTTP backend (HAProxy in
# http mode answering 200 itself). Every connection is one HTTP/1.0
# request: accept, backend connect, first bytes both ways, close.
#   bench/connrate.sh [rate|strace|ring|burst]       (default rate)
#   ROUNDS=3 N=20000 C=32 bench/connrate.sh
#   OTHER=/path/to/tcpops bench/connrate.sh   (a second tcpops build, e.g.
#   an earlier commit's, in the same rounds, port 7403)
#   TCPOPS=/path/to/tcpops bench/connrate.sh strace   (count that build)
# rate: ab -n N -c C through each relay, ROUNDS alternated rounds; prints
#   conn/s (ab's requests per second) and the relay's CPU ticks
#   (utime+stime from /proc, 100 a second) for the N connections.
# strace: strace -c -f on tcpops for 2,000 connections (ab -n 2000 -c 8),
#   syscalls per relayed connection.
# ring: RSS of a fresh tcpops before and after 50,000 connections through
#   it (100,000 closed events: a full ring of 65,536), 3 s and 33 s after.
# burst: tcpops-load reconnect: 9,000 connections at once through tcpops to
#   the load tool's echo backend, 3 times, with the kernel's listen queue
#   overflows (/proc/net/netstat) during each.
# Needs haproxy and ab (apache2-utils); uses ports 7100 and 7400-7404 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-rate}
ROUNDS=${ROUNDS:-3}
N=${N:-20000}
C=${C:-32}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
export CGO_ENABLED=0
if [ -n "${TCPOPS:-}" ]; then # a given build instead of this tree's
	cp "$TCPOPS" "$work/tcpops"
else
	go build -o "$work/tcpops" ./cmd/tcpops
fi

cat > "$work/backend.cfg" <<CFG
global
    maxconn 9000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:7400
    http-request return status 200 content-type text/plain string ok
CFG
cat > "$work/relay.cfg" <<CFG
global
    maxconn 9950
    nbthread 2
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen relay
    bind 127.0.0.1:7402
    server backend 127.0.0.1:7400
CFG
haproxy -f "$work/backend.cfg" -db >/dev/null 2>&1 &
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/7400) 2>/dev/null && break; sleep 0.05; done
"$work/tcpops" --socket "$work/s" --log-level warn --listen 'tcp://127.0.0.1:7401?backend=127.0.0.1:7400' &
tp=$!
haproxy -f "$work/relay.cfg" -db >/dev/null 2>&1 &
hp=$!
if [ -n "${OTHER:-}" ]; then
	"$OTHER" --socket "$work/s2" --log-level warn --listen 'tcp://127.0.0.1:7403?backend=127.0.0.1:7400' &
	op=$!
	for _ in $(seq 100); do [ -S "$work/s2" ] && break; sleep 0.05; done
fi
for _ in $(seq 100); do [ -S "$work/s" ] && break; sleep 0.05; done
sleep 0.5

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(go version | cut -d' ' -f3)"

if [ "$what" = ring ]; then
	"$work/tcpops" --socket "$work/s4" --log-level warn --listen 'tcp://127.0.0.1:7404?backend=127.0.0.1:7400' &
	rp=$!
	for _ in $(seq 100); do [ -S "$work/s4" ] && break; sleep 0.05; done
	rss() { awk '/VmRSS/{print $2}' "/proc/$rp/status"; }
	echo "ring: RSS at start $(rss) kB"
	ab -q -n 50000 -c "$C" http://127.0.0.1:7404/ | grep -E 'Complete|Failed'
	sleep 3
	echo "ring: 3 s after 50,000 connections: $(rss) kB"
	sleep 30
	echo "ring: 33 s after: $(rss) kB"
	exit 0
fi

if [ "$what" = burst ]; then
	go build -o "$work/load" ./cmd/tcpops-load
	"$work/load" serve -listen 127.0.0.1:7100 >/dev/null &
	"$work/tcpops" --socket "$work/s5" --log-level warn --listen 'tcp://127.0.0.1:7405?backend=127.0.0.1:7100' &
	for _ in $(seq 100); do [ -S "$work/s5" ] && break; sleep 0.05; done
	overflows() { awk '/^TcpExt:/{if(!h){split($0,k);h=1}else{split($0,v);for(i=2;i<=NF;i++)if(k[i]=="ListenOverflows")print v[i]}}' /proc/net/netstat; }
	echo "burst: listen backlog $(ss -ltn 'sport = :7405' | awk 'NR==2{print $3}') (net.core.somaxconn $(cat /proc/sys/net/core/somaxconn))"
	for round in 1 2 3; do
		o0=$(overflows)
		"$work/load" reconnect -addr 127.0.0.1:7405 -n 9000 || true
		echo "burst: listen queue overflows during it: $(($(overflows) - o0)); load $(cut -d' ' -f1 /proc/loadavg)"
	done
	exit 0
fi

if [ "$what" = strace ]; then
	ab -q -n 500 -c 8 http://127.0.0.1:7401/ >/dev/null # warm up: pipes, goroutines
	strace -c -f -q -p $tp -o "$work/strace" &
	st=$!
	sleep 1
	ab -q -n 2000 -c 8 http://127.0.0.1:7401/ | grep -E 'Complete|Failed'
	sleep 0.5
	kill -INT $st; wait $st || true
	cat "$work/strace"
	awk '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "%-16s %6.2f per connection\n", $NF, $4/2000}' "$work/strace"
	exit 0
fi

run() { # name port pid
	local t0 t1 out
	t0=$(ticks "$3")
	out=$(ab -q -n "$N" -c "$C" "http://127.0.0.1:$2/" 2>&1)
	t1=$(ticks "$3")
	printf '%-8s %9s conn/s  %4d ticks  failed %s  load %s\n' "$1" \
		"$(awk '/Requests per second/{print $4}' <<<"$out")" $((t1 - t0)) \
		"$(awk '/Failed requests/{print $3}' <<<"$out")" "$(cut -d' ' -f1 /proc/loadavg)"
}
ab -q -n 2000 -c "$C" http://127.0.0.1:7401/ >/dev/null
ab -q -n 2000 -c "$C" http://127.0.0.1:7402/ >/dev/null
[ -n "${OTHER:-}" ] && ab -q -n 2000 -c "$C" http://127.0.0.1:7403/ >/dev/null
for round in $(seq "$ROUNDS"); do
	echo "== round $round"
	run tcpops 7401 $tp
	run haproxy 7402 $hp
	[ -n "${OTHER:-}" ] && run other 7403 $op
done
