//! Prints `deploy/install.yaml`: the chart rendered with its default values.

use std::process::ExitCode;

fn main() -> ExitCode {
    match daprs_e2e::chart::helm().and_then(|h| daprs_e2e::chart::install_yaml(&h)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("install-yaml: {e}");
            ExitCode::FAILURE
        }
    }
}
