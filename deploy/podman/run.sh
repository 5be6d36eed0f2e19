#!/bin/sh
# ambassadord on Podman: an ambassador container that follows Podman's
# Docker-compatible API (podman system service) through its socket, and
# serves a target on a Podman network it shares with the backends.
#
#   podman network create ambassadord
#   podman run -d --name redis --network ambassadord \
#     --label ambassador.target=redis redis:7
#   deploy/podman/run.sh
#   podman run --rm --network ambassadord redis:7 redis-cli -h ambassador ping   # PONG
#
# Claim the target with a higher priority and new connections go there at
# once; stop it and they come back:
#   podman run -d --name redis-2 --network ambassadord \
#     --label ambassador.target=redis --label ambassador.priority=10 redis:7
#
# The API service must run: systemctl enable --now podman.socket (rootless:
# systemctl --user enable --now podman.socket). ambassadord.container
# beside this file is the same container as a systemd service (quadlet).
#
# Variables (defaults in brackets):
#   AMBASSADORD_IMAGE  [ambassadord:latest]  the image `make image` builds
#                                            (podman load it, or build it
#                                            with podman build)
#   AMBASSADOR_NAME    [ambassador]          the container's name
#   AMBASSADOR_TARGET  [redis]               the target: its claimers
#                                            (ambassador.target labels) or
#                                            the container of that name
#   AMBASSADOR_PORTS   [6379]                where it listens
#   PODMAN_NETWORK     [ambassadord]         a network shared with the
#                                            backends (podman network create)
#   PODMAN_SOCKET      [/run/podman/podman.sock as root, else
#                       $XDG_RUNTIME_DIR/podman/podman.sock]
#   PODMAN             [podman]              the podman command, with its
#                                            options (--url ...)
#
# Rootless, the containers of a network of its own reach each other: run
# the ambassador and the backends there. Containers on slirp4netns or
# pasta (rootless Podman's default) have no address it can reach: see
# docs/podman.md.
#
# The socket is root-equivalent over Podman's containers (rootless: over
# the user's). The container runs with a read-only root, no capabilities
# and no privilege gain; label=disable lets it use the socket where SELinux
# confines containers (it changes nothing elsewhere).
set -eu

if [ -z "${PODMAN_SOCKET:-}" ]; then
	if [ "$(id -u)" = 0 ]; then
		PODMAN_SOCKET=/run/podman/podman.sock
	else
		PODMAN_SOCKET=${XDG_RUNTIME_DIR:?set XDG_RUNTIME_DIR or PODMAN_SOCKET}/podman/podman.sock
	fi
fi

# PODMAN is split into words on purpose: a command and its options.
# shellcheck disable=SC2086
exec ${PODMAN:-podman} run -d \
	--name "${AMBASSADOR_NAME:-ambassador}" \
	--network "${PODMAN_NETWORK:-ambassadord}" \
	--label "ambassador.target=${AMBASSADOR_TARGET:-redis}" \
	--label "ambassador.ports=${AMBASSADOR_PORTS:-6379}" \
	--volume "$PODMAN_SOCKET:/var/run/docker.sock" \
	--security-opt label=disable \
	--read-only \
	--cap-drop all \
	--security-opt no-new-privileges \
	--restart on-failure \
	"${AMBASSADORD_IMAGE:-ambassadord:latest}"
