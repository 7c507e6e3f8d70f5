//! Compiles the integration tests' own gRPC service (a stand-in for a user's
//! service daprd knows nothing of), so the tests can call it through the proxy.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tests/proto");
    let fds = protox::compile(["echo.proto"], ["tests/proto"])?;
    // For the test app's own reflection service.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("echo_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
