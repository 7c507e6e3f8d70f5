//! Compiles the streaming test service the proxy benchmark calls (the same
//! one the sidecar's integration tests use).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../sidecar/tests/proto";
    println!("cargo:rerun-if-changed={dir}");
    let fds = protox::compile(["echo.proto"], [dir])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
