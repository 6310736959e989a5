#!/usr/bin/env bash
# tcpopsctl state CONID as a whole process against the floor: bench/floor,
# the least static Go client of the control socket making the same call.
# Both run side by side under hyperfine -N on one daemon's socket, in
# alternated rounds (3 in each order), each round's medians printed with
# the load average beside them (BENCHMARKS.md, "CLI start-up against the
# floor").
#
#   bench/cli-floor.sh            # this tree's tcpopsctl and the floor
#   bench/cli-floor.sh REV        # and the tcpopsctl of git revision REV
#
# RUNS (300), WARMUP (20) and ROUNDS (3 per order) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)"; exit 1; }
runs=${RUNS:-300} warmup=${WARMUP:-20} rounds=${ROUNDS:-3}
dir=$(mktemp -d /tmp/cli-floor.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT

export CGO_ENABLED=0 # the documented build
go build -o "$dir/tcpops" ./cmd/tcpops
go build -o "$dir/tcpopsctl" ./cmd/tcpopsctl
go build -o "$dir/floor" ./bench/floor
before=""
if [ $# -gt 0 ]; then
	mkdir "$dir/src"
	git archive "$1" | tar -x -C "$dir/src"
	(cd "$dir/src" && go build -o "$dir/tcpopsctl-before" ./cmd/tcpopsctl)
	before="$dir/tcpopsctl-before"
fi

sock=$dir/t.sock port=$((17000 + RANDOM % 2000))
"$dir/tcpops" --socket "$sock" --listen "tcp://127.0.0.1:$port" --lifetime 0 --log-level error &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
# One connection, held open (at most an hour) for state to find: conid 1.
bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; sleep 3600" &
pids+=($!)
for _ in $(seq 50); do "$dir/floor" -socket "$sock" -conid 1 2>/dev/null | grep -q '"state"' && break; sleep 0.1; done
"$dir/tcpopsctl" -s "$sock" state 1

ctl="$dir/tcpopsctl -s $sock state 1"
floor="$dir/floor -socket $sock -conid 1"
old=""
[ -n "$before" ] && old="$before -s $sock state 1"
round() {
	local json=$dir/round.json
	hyperfine -N --warmup "$warmup" --runs "$runs" --export-json "$json" "$@" >/dev/null 2>&1
	local first=${1%% *}
	echo "${first##*/} first, load $(cut -d' ' -f1-3 /proc/loadavg):"
	python3 - "$json" "$dir" <<-'EOF'
		import json, sys
		rs = json.load(open(sys.argv[1]))['results']
		floor = [r for r in rs if '/floor ' in r['command']][0]['median']
		for r in rs:
		    name = r['command'].replace(sys.argv[2] + '/', '').split(' ')[0]
		    print('  %-17s median %6.3f ms  (user %.3f, sys %.3f)  %.2fx the floor' % (
		        name, r['median'] * 1000, r['user'] * 1000, r['system'] * 1000, r['median'] / floor))
	EOF
}
for _ in $(seq "$rounds"); do
	if [ -n "$old" ]; then round "$ctl" "$floor" "$old"; else round "$ctl" "$floor"; fi
	if [ -n "$old" ]; then round "$floor" "$old" "$ctl"; else round "$floor" "$ctl"; fi
done
