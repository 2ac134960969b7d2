# syntax=docker/dockerfile:1
# envoyproxy/ratelimit, the global rate-limit service, built from the Go module at the version
# the local stack and the tests run (deploy/local/ratelimit.sh): the module proxy has no tagged
# release newer than 2020, so the image is pinned by this pseudo-version, not by a registry tag.
#   docker build -f deploy/compose/ratelimit.Dockerfile -t partners-engine/envoy-ratelimit:1.4.1-3fb702589d36 deploy/compose

FROM golang:1.26.8-bookworm AS build
ARG RATELIMIT_VERSION=v1.4.1-0.20260122083618-3fb702589d36
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags="-s -w" github.com/envoyproxy/ratelimit/src/service_cmd@${RATELIMIT_VERSION}

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/service_cmd /usr/local/bin/ratelimit
USER 65532:65532
# 8080 HTTP (/healthcheck), 8081 gRPC (envoy.service.ratelimit.v3), 6070 debug (/rlconfig), 9090 Prometheus
EXPOSE 8080 8081 6070 9090
ENTRYPOINT ["/usr/local/bin/ratelimit"]
