# The daprd sidecar image. The binary sits at /daprd and the image has no
# ENTRYPOINT, so the injector's args ["/daprd", flags...] run it directly,
# as with Dapr's own image.
#   docker build -f deploy/docker/daprd.Dockerfile -t ghcr.io/daprs/daprd:dev .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# -p: the sidecar's own dependency features, as sidecar/symbol-order.txt expects.
RUN cargo build --release --locked -p daprs-sidecar --bin daprd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/daprd /daprd
USER 65532:65532
CMD ["/daprd"]
