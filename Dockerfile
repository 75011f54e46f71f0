# syntax=docker/dockerfile:1
# Multi-stage build: a Rust builder and a slim, non-root runtime.
#   docker build -t projector .
#   docker run --rm -e DATABASE_URL=... -e CONVEX_URL=... -e CONVEX_ADMIN_KEY=... -p 9187:9187 projector

FROM rust:1-bookworm AS build
WORKDIR /src
# .dockerignore lets in only Cargo.toml, Cargo.lock, src/, sql/ (include_str!),
# benches/ and tests/ (targets Cargo.toml may declare).
COPY . .
# The registry cache survives between builds; the binary is copied out of
# target/ before the layer ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile production --locked --bin projector \
    && install -m 0755 target/production/projector /usr/local/bin/projector

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin projector
COPY --from=build /usr/local/bin/projector /usr/local/bin/projector
USER 10001
# In a container the ops endpoints must listen beyond loopback.
ENV PROJECTOR_METRICS_ADDR=0.0.0.0:9187
EXPOSE 9187
ENTRYPOINT ["projector"]
CMD ["run"]
