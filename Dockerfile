# gatehouse: multi-stage build. The dependency layer is cached until Cargo.toml/Cargo.lock change.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY handlers/Cargo.toml handlers/Cargo.toml
# The simulator (a dependency: `gatehouse demo` runs against it) and the benchmark harness are
# workspace members: their manifests and placeholder targets let cargo load the workspace and
# build the dependencies; the harness is not built into the image.
COPY sim/Cargo.toml sim/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src/bin handlers/src sim/src bench/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs handlers/src/lib.rs \
 && echo 'fn main() {}' > sim/src/main.rs && touch sim/src/lib.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && cargo build --release --locked \
 && rm -rf src handlers/src sim/src bench/src
COPY . .
# Make sure cargo rebuilds the real sources over the placeholders.
RUN touch src/main.rs src/lib.rs handlers/src/lib.rs sim/src/lib.rs \
 && cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/gatehouse --create-home gatehouse \
 && mkdir -p /var/lib/gatehouse/data \
 && chown -R gatehouse:gatehouse /var/lib/gatehouse
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY config/ /etc/gatehouse/
WORKDIR /var/lib/gatehouse
USER 10001:10001
ENV GATEHOUSE_CONFIG=/etc/gatehouse/default.toml \
    GATEHOUSE__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
# The SQLite store of the default config (the embedded queue and the audit trail live in it).
VOLUME ["/var/lib/gatehouse/data"]
# Ready = RabbitMQ (or the embedded queue's store) and the store reachable; the probe asks the
# listener the config names, so it follows GATEHOUSE__SERVER__LISTEN.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/gatehouse", "probe"]
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
