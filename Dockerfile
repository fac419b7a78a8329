# Build stage: the release binary.
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# SQLX_OFFLINE (.cargo) and the checked queries' data (.sqlx): no database at build time.
COPY .cargo .cargo
COPY .sqlx .sqlx
COPY src src
COPY crates crates
COPY migrations migrations
# The shipped price table and the dashboard's template settings are compiled in.
COPY prices prices
COPY askama.toml askama.toml
COPY benches benches
RUN cargo build --release --locked --bin genq

# Run stage: the binary on a slim base, as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home genq \
 && mkdir -p /data/output && chown genq /data/output
COPY --from=build /src/target/release/genq /usr/local/bin/genq
USER genq
ENV GENQ_OUTPUT_DIR=/data/output
ENTRYPOINT ["genq"]
CMD ["worker"]
