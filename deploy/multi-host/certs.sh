#!/bin/sh
# Certificates for the engines' TLS, made with openssl, in Docker's layout:
# each directory holds ca.pem (the CA the holder trusts), cert.pem and
# key.pem, as DOCKER_CERT_PATH, dockerd's --tlscacert/--tlscert/--tlskey
# and ambassadord's --engine NAME=URL,tls=DIR expect. One CA signs every
# engine's server certificate and every ambassador's client certificate;
# an engine run with --tlsverify accepts clients of that CA alone.
#
#   deploy/multi-host/certs.sh ca                     # once: ca/ca.pem, ca/ca-key.pem
#   deploy/multi-host/certs.sh server big 192.168.1.52 big.example.com
#   deploy/multi-host/certs.sh client ambassador
#
# `server NAME ADDR...` writes server-NAME/ for the engine's host: its
# certificate names every ADDR (IP addresses and DNS names) that clients
# dial, and haproxy.pem (certificate and key in one file) for the socket
# proxy of socket-proxy.yml. `client NAME` writes client-NAME/ for the
# ambassadors. Everything goes to the current directory, or $CERTS_OUT.
#
# Keep ca/ca-key.pem off the hosts: whoever holds it can mint a client
# certificate that every engine accepts, and so control its host. Keys are
# written 0600: a container that runs as another user (the recipes' 65534)
# needs the key made readable to it (chown 65534 DIR/key.pem, and
# DIR/haproxy.pem for the proxy).
#
# Variables: CERTS_OUT [.], CERTS_DAYS [825] (server and client
# certificates), CA_DAYS [3650].
set -eu

out=${CERTS_OUT:-.}
days=${CERTS_DAYS:-825}
ca=$out/ca

usage() {
	echo "usage: $0 ca | server NAME ADDR... | client NAME" >&2
	exit 2
}

# newkey DIR CN: a P-256 key and a signing request for CN in DIR.
newkey() {
	openssl req -new -noenc -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$1/key.pem" -out "$1/req.csr" -subj "/CN=$2" 2>/dev/null
	chmod 0600 "$1/key.pem"
}

# sign DIR EXTFILE: the CA signs DIR's request with the extensions of
# EXTFILE into DIR/cert.pem; DIR gets the CA's certificate as ca.pem.
sign() {
	openssl x509 -req -sha256 -days "$days" -in "$1/req.csr" \
		-CA "$ca/ca.pem" -CAkey "$ca/ca-key.pem" -CAcreateserial -CAserial "$ca/ca.srl" \
		-out "$1/cert.pem" -extfile "$2" 2>/dev/null
	cp "$ca/ca.pem" "$1/ca.pem"
	rm -f "$1/req.csr" "$2"
}

case ${1:-} in
ca)
	[ $# -eq 1 ] || usage
	mkdir -p "$ca"
	openssl req -x509 -new -noenc -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$ca/ca-key.pem" -out "$ca/ca.pem" -days "${CA_DAYS:-3650}" \
		-subj "/CN=ambassadord engines CA" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	chmod 0600 "$ca/ca-key.pem"
	echo "$ca/ca.pem"
	;;
server)
	[ $# -ge 3 ] || usage
	name=$2
	shift 2
	dir=$out/server-$name
	mkdir -p "$dir"
	san=""
	for a in "$@"; do
		# IPv4 is digits and dots, IPv6 has colons; the rest are names.
		case $a in
		*[!0-9.]* | "") case $a in *:*) kind=IP ;; *) kind=DNS ;; esac ;;
		*) kind=IP ;;
		esac
		san="${san:+$san,}$kind:$a"
	done
	newkey "$dir" "$name"
	printf 'subjectAltName = %s\nextendedKeyUsage = serverAuth\nkeyUsage = critical, digitalSignature\n' "$san" >"$dir/ext.cnf"
	sign "$dir" "$dir/ext.cnf"
	cat "$dir/cert.pem" "$dir/key.pem" >"$dir/haproxy.pem"
	chmod 0600 "$dir/haproxy.pem"
	echo "$dir"
	;;
client)
	[ $# -eq 2 ] || usage
	dir=$out/client-$2
	mkdir -p "$dir"
	newkey "$dir" "$2"
	printf 'extendedKeyUsage = clientAuth\nkeyUsage = critical, digitalSignature\n' >"$dir/ext.cnf"
	sign "$dir" "$dir/ext.cnf"
	echo "$dir"
	;;
*)
	usage
	;;
esac
