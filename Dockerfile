# ambassadord: a drop-in replacement for Docker's classic socat "ambassador"
# image. The binary is static (CGO_ENABLED=0), so the image holds nothing else.
#
# There is deliberately no build stage: `make build` produces bin/ambassadord
# on the host and this file only packages it, so building the image never
# needs to pull anything (`make image`).
FROM scratch

# VERSION is passed by `make image` and the e2e harness (git describe).
ARG VERSION=dev

LABEL ambassador.role=ambassador \
      org.opencontainers.image.title=ambassadord \
      org.opencontainers.image.description="TCP ambassador: forwards <ALIAS>_PORT_<P>_TCP links like the classic socat ambassador" \
      org.opencontainers.image.source=https://github.com/ambassadord/ambassadord \
      org.opencontainers.image.version=$VERSION

COPY bin/ambassadord /ambassadord

# The first probe runs one interval after start; start-period only forgives
# failures, so healthy is reported about 10 s after the container starts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s CMD ["/ambassadord","healthcheck"]

ENTRYPOINT ["/ambassadord"]
