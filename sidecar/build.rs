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
    symbol_order();
    Ok(())
}

/// Lays daprd's code out in the order of `symbol-order.txt` (written by
/// `bench/symbol-order.py`): what an idle sidecar and the request paths run
/// sits together instead of scattered over the text, so far fewer pages of
/// it are resident. Only where rustc links with lld (its default on
/// x86_64 Linux) and for release builds; elsewhere the order is the
/// compiler's and nothing else changes.
fn symbol_order() {
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let lld = var("TARGET") == "x86_64-unknown-linux-gnu"
        && var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link");
    let file = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    if lld && var("PROFILE") == "release" && file.exists() {
        println!(
            "cargo:rustc-link-arg-bin=daprd=-Wl,--symbol-ordering-file={}",
            file.display()
        );
        // Names that a change of code or dependencies removed are skipped.
        println!("cargo:rustc-link-arg-bin=daprd=-Wl,--no-warn-symbol-ordering");
    }
}
