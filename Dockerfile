# syntax=docker/dockerfile:1
# One image with both binaries, for the Helm chart (charts/gatehouse):
#   /usr/local/bin/gatehouse-controller, /usr/local/bin/gatehouse-dataplane
# Build: docker build -t REGISTRY/gatehouse:TAG .   (see docs/helm.md)

# The builder is Debian 12 (bookworm), as the runtime image is, so the
# binaries link against the same glibc.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds;
# the binaries are copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gatehouse-controller -p gatehouse-dataplane \
 && mkdir -p /out \
 && cp target/release/gatehouse-controller target/release/gatehouse-dataplane /out/

# glibc and libgcc, no shell, no package manager; runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse-controller /usr/local/bin/gatehouse-controller
COPY --from=build /out/gatehouse-dataplane /usr/local/bin/gatehouse-dataplane
USER 65532:65532
# The chart sets the command of each container; running the image alone
# starts the controller.
ENTRYPOINT ["/usr/local/bin/gatehouse-controller"]
