#!/usr/bin/env bash
# The fleet's figures of BENCHMARKS.md, with Debian's nats-server:
#   bench/fleet.sh [list|burst|all]   (default all)
# list:  3 daemons x 3,000 connections, tcpopsctl --nats --all-hosts list
#        (table and -o json) as fresh processes.
# burst: 10,000 connections to one daemon closed at once, with and without
#        --nats, alternated rounds (ROUNDS, default 3): when the daemon had closed the last,
#        and (with --nats) when the last event was stored in JetStream.
# Uses ports 7400-7403 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || { echo "nats-server missing: install Debian package nats-server"; exit 1; }
PATH=$PATH:/usr/sbin
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
export CGO_ENABLED=0
go build -o "$work/tcpops" ./cmd/tcpops
go build -o "$work/tcpopsctl" ./cmd/tcpopsctl
go build -o "$work/load" ./cmd/tcpops-load
NATS=nats://127.0.0.1:7400

wait_socket() { for _ in $(seq 200); do "$work/tcpopsctl" -s "$1" wait ready --timeout 100ms >/dev/null 2>&1 && return; done; echo "no daemon on $1"; exit 1; }
start_nats() {
	rm -rf "$work/js"
	nats-server -a 127.0.0.1 -p 7400 -js -sd "$work/js" >"$work/nats.log" 2>&1 &
	np=$!
	for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/7400) 2>/dev/null && return; sleep 0.05; done
	echo "nats-server did not start"; exit 1
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r), $(nats-server --version)"

if [ "$what" = list ] || [ "$what" = all ]; then
	start_nats
	pids=()
	for h in 1 2 3; do
		"$work/tcpops" --socket "$work/h$h.s" --listen tcp://127.0.0.1:740$h --lifetime 0 --log-level warn --nats $NATS --host-name h$h &
		pids+=($!)
		wait_socket "$work/h$h.s"
	done
	"$work/load" fleetlist -nats $NATS -addrs 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 -n 3000 -ctl "$work/tcpopsctl"
	kill "${pids[@]}"; wait "${pids[@]}" || true
	kill $np; wait $np || true
fi

if [ "$what" = burst ] || [ "$what" = all ]; then
	start_nats
	for round in $(seq "${ROUNDS:-3}"); do
		for mode in off on; do
			args=(); load=()
			if [ $mode = on ]; then args=(--nats $NATS --host-name b$round); load=(-nats $NATS -host b$round); fi
			"$work/tcpops" --socket "$work/b.s" --listen tcp://127.0.0.1:7401 --lifetime 0 --log-level warn "${args[@]}" &
			bp=$!
			wait_socket "$work/b.s"
			echo "== round $round, --nats $mode"
			"$work/load" burst -addr 127.0.0.1:7401 -socket "$work/b.s" -n 10000 -pid $bp "${load[@]}"
			kill $bp; wait $bp || true
		done
	done
	kill $np; wait $np || true
fi
