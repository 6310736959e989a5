#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Go: installs the
# programs the tests drive (missing ones only), then runs go test ./...
# Extra arguments go to go test (e.g. ./test.sh -race -count=1).
#
# The tests use ss and ip (iproute2) to check keepalive from outside and to
# cut a link, unshare and prlimit (util-linux) for network namespaces and fd
# limits, tmux to drive the shell and top through a real terminal,
# systemd-analyze (systemd) to verify the unit file, gcc for the race
# detector, man (man-db) to render the manual pages as a reader sees them,
# git to replay the README from a fresh clone, and the real peers tcpops is
# tested against: HAProxy, Kamailio, Chromium, sslscan, openssl and
# nats-server (the fleet's NATS). A tool that cannot be installed stops the
# run here, naming it; no test is skipped for want of one.
set -euo pipefail
cd "$(dirname "$0")"

tools=(
	ss:iproute2 ip:iproute2 unshare:util-linux prlimit:util-linux tmux:tmux
	systemd-analyze:systemd gcc:gcc
	haproxy:haproxy kamailio:kamailio chromium:chromium
	sslscan:sslscan openssl:openssl man:man-db git:git
	nats-server:nats-server
)
have() { command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ]; }
need=()
for t in "${tools[@]}"; do
	have "${t%%:*}" || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo -n"
	echo "installing: $(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')"
	$sudo apt-get update -qq || true
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
		$(printf '%s\n' "${need[@]}" | sort -u) >/dev/null || true
fi
missing=0
for t in "${tools[@]}"; do
	have "${t%%:*}" || { echo "${t%%:*} (Debian package ${t#*:}) is missing and could not be installed"; missing=1; }
done
[ "$missing" = 0 ] || exit 1

go test "$@" ./...
