# The daprs-operator image.
#   docker build -f deploy/docker/operator.Dockerfile -t ghcr.io/daprs/daprs-operator:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin daprs-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/daprs-operator /daprs-operator
USER 65532:65532
ENTRYPOINT ["/daprs-operator"]
