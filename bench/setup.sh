#!/bin/sh
# Installs the benchmark's peers and clients from Debian's packages when
# they are missing: iperf3, socat, haproxy, redis-server, redis-benchmark
# (redis-tools), stunnel4 (the TLS hop's peer), and nginx-light with
# libnginx-mod-stream (the UDP rows' peer, nginx's stream module; socat is
# the other). On amd64 also qemu-system-x86 and Debian's cloud kernel, for
# the VM the idle UDP row runs in where the descriptor limit is too low
# (bench/vm.go): the kernel is unpacked from its package into
# /var/cache/ambassadord-bench, not installed. Quick when nothing is
# missing; without root it only says what is missing.
set -eu

kdir=/var/cache/ambassadord-bench
vm=""
[ "$(uname -m)" = x86_64 ] && vm=1

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
if [ -n "$vm" ]; then
	command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
fi
kernel=""
if [ -n "$vm" ] && ! ls "$kdir"/vmlinuz-* >/dev/null 2>&1; then
	kernel=1
fi
[ -z "$missing" ] && [ -z "$kernel" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "bench/setup.sh: missing:$missing${kernel:+ (and a kernel in $kdir)}; run as root or: sudo apt-get install -y$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
if [ -n "$missing" ]; then
	echo "bench/setup.sh: installing$missing" >&2
	# The bench starts its own servers on ports of its own, so the
	# packages' services, if they start, are left alone.
	apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
if [ -n "$kernel" ]; then
	# The kernel package the metapackage points at, unpacked: installing
	# it would pull in an initramfs generator and a boot loader's hooks.
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
	echo "bench/setup.sh: fetching $pkg's kernel into $kdir" >&2
	tmp=$(mktemp -d)
	chmod 755 "$tmp" # apt-get download drops its rights to _apt
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
	dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
	mkdir -p "$kdir"
	cp "$tmp"/boot/vmlinuz-* "$kdir"/
fi
