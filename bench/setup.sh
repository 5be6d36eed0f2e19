#!/bin/sh
# Installs the benchmark's peers and clients from Debian's packages when
# they are missing: iperf3, socat, haproxy, redis-server, redis-benchmark
# (redis-tools), stunnel4 (the TLS hop's peer), and nginx-light with
# libnginx-mod-stream (the UDP rows' peer, nginx's stream module; socat is
# the other). Quick when nothing is missing; without root it only says what
# is missing.
set -eu

missing=""
for pair in iperf3:iperf3 socat:socat haproxy:haproxy redis-server:redis-server redis-benchmark:redis-tools stunnel4:stunnel4; do
	tool=${pair%%:*}
	pkg=${pair#*:}
	command -v "$tool" >/dev/null 2>&1 || missing="$missing $pkg"
done
# nginx is in /usr/sbin, which a user's PATH may lack; the stream module is
# a file nginx loads (load_module), not a command.
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$missing nginx-light"
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing="$missing libnginx-mod-stream"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "bench/setup.sh: missing:$missing; run as root or: sudo apt-get install -y$missing" >&2
	exit 1
fi
echo "bench/setup.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# The bench starts its own servers on ports of its own, so the packages'
# services, if they start, are left alone.
apt-get install -y -q --no-install-recommends $missing >/dev/null
