# One image with all three binaries; compose.yaml picks the command per service. mariadb-client
# for the binlog archiver's mariadb-binlog (shopctl backup archive).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p shopgate-verifier -p shopgate-backend -p shopctl

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl mariadb-client && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/verifier /src/target/release/backend /src/target/release/shopctl /usr/local/bin/
RUN useradd --system --uid 10001 shop
USER shop
