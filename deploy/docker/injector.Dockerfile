# The daprs-injector image.
#   docker build -f deploy/docker/injector.Dockerfile -t ghcr.io/daprs/daprs-injector:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin daprs-injector

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/daprs-injector /daprs-injector
USER 65532:65532
ENTRYPOINT ["/daprs-injector"]
