#!/usr/bin/env bash
# The bulk and batch figures of BENCHMARKS.md, on this machine:
#   1. 1,000 `state` lines through one `tcpopsctl batch` process against
#      1,000 `kamcmd core.tcp_info` processes (Debian's kamailio, ctl only),
#      side by side, 3 alternated rounds;
#   2. a bulk close of 9,000 connections by CIDR with a follower counting
#      the closed events, at once and with rate 1000.
# (The dry run over 10,000 connections, server side, is a Go benchmark:
#  go test -run '^$' -bench DryRunServerSide ./daemon/control/)
# Needs kamailio (kamcmd); uses port 7400 and 127.0.2.0/24 on the loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for p in kamailio kamcmd; do
	command -v $p >/dev/null || [ -x /usr/sbin/$p ] || { echo "$p missing: install Debian package kamailio"; exit 1; }
done
export PATH=$PATH:/usr/sbin CGO_ENABLED=0
go build -o "$work/tcpops" ./cmd/tcpops
go build -o "$work/tcpopsctl" ./cmd/tcpopsctl
go build -o "$work/load" ./cmd/tcpops-load
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r)"

"$work/tcpops" --socket "$work/s" --lifetime 0 --log-level warn --listen 'tcp://127.0.0.1:7400?backend=echo' &
for _ in $(seq 100); do [ -S "$work/s" ] && break; sleep 0.05; done
cat > "$work/kamailio.cfg" <<CFG
#!KAMAILIO
debug=1
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=tcp:127.0.0.1:7401
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "corex.so"
modparam("ctl", "binrpc", "unix:$work/kamailio_ctl")
request_route { drop; }
CFG
kamailio -f "$work/kamailio.cfg" -Y "$work" -DD -E -m 32 -M 4 >"$work/kamailio.log" 2>&1 &
for _ in $(seq 100); do [ -S "$work/kamailio_ctl" ] && break; sleep 0.05; done
kamcmd -s "unix:$work/kamailio_ctl" core.tcp_info >/dev/null

exec 3<>/dev/tcp/127.0.0.1/7400
echo hello >&3
read -r -u 3 _
id=$("$work/tcpopsctl" -s "$work/s" list | awk 'NR == 2 { print $1 }')
for _ in $(seq 1000); do echo "state $id"; done > "$work/states.txt"
TIMEFORMAT=%R
for round in 1 2 3; do
	k=$( { time (for _ in $(seq 1000); do kamcmd -s "unix:$work/kamailio_ctl" core.tcp_info >/dev/null; done) ; } 2>&1 )
	b=$( { time ("$work/tcpopsctl" -s "$work/s" batch "$work/states.txt" >/dev/null) ; } 2>&1 )
	n=$("$work/tcpopsctl" -s "$work/s" batch "$work/states.txt" | grep -c ": 1 ok")
	echo "round $round: 1000 kamcmd core.tcp_info processes ${k}s; tcpopsctl batch of 1000 state lines ${b}s ($n answers 'ok'); $(awk -v k="$k" -v b="$b" 'BEGIN { printf "%.1fx", k / b }')"
done
exec 3>&-

"$work/load" bulk -addr 127.0.0.1:7400 -socket "$work/s" -n 9000
"$work/load" bulk -addr 127.0.0.1:7400 -socket "$work/s" -n 9000 -rate 1000
