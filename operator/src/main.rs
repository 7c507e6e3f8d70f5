//! `daprs-operator crdgen [--out DIR]` prints or writes the CRDs.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "daprs-operator",
    about = "Reconciles the Dapr resources on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions, or write one file each into --out.
    Crdgen {
        /// Folder to write into (e.g. deploy/crds); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn crdgen(out: Option<PathBuf>) -> Result<(), String> {
    let crds = daprs_api::crds::all()?;
    match out {
        None => {
            let docs: Result<Vec<String>, String> =
                crds.iter().map(|(_, c)| daprs_api::crds::to_yaml(c)).collect();
            print!("{}", docs?.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for (file, crd) in &crds {
                let path = dir.join(file);
                std::fs::write(&path, daprs_api::crds::to_yaml(crd)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crdgen { out } => crdgen(out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daprs-operator: {e}");
            ExitCode::from(1)
        }
    }
}
