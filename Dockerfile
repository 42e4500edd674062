# The phonefleet image: `phonefleet run` (controller + provisioning server), non-root, on a
# distroless base with glibc and nothing else (no shell, no package manager).
#
#   docker build -t phonefleet:0.1.0 .
#
# Without Docker (and without pulling anything): `make image` (scripts/build-image.sh) builds an
# equivalent OCI image from Debian packages, reading this file's final stage for its user,
# entrypoint, command, ports and labels, and the ENV line below for the build profile;
# tests/image_build.rs checks the two agree.
#
# Release build without the `simulated-time` feature: a production binary cannot be switched
# to a compressed clock (see src/clock.rs).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Smaller binary than the repository's release profile (which keeps line tables for profiling):
# no debug info, symbol names kept so panics still show a readable backtrace.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo
# Dependencies first, so that a source change does not rebuild them: build a stub crate with
# the real manifest and lock file, then the real sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches bench \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/planner.rs && echo 'fn main() {}' > bench/provisioning_server.rs \
    && cargo build --release --locked --bin phonefleet \
    && rm -rf src benches bench
COPY src src
COPY benches benches
COPY bench bench
# Touch so cargo sees the real sources as newer than the stub's build.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin phonefleet \
    && cp target/release/phonefleet /phonefleet

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /phonefleet /usr/local/bin/phonefleet
# 65532 is distroless's "nonroot"; the chart runs the pod as this uid/gid.
USER 65532:65532
# Provisioning server (phones) and metrics/health.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/phonefleet"]
CMD ["run"]
LABEL org.opencontainers.image.title="phonefleet" \
      org.opencontainers.image.description="Kubernetes controller and provisioning server for fleets of IP desk phones" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
