use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gatehouse_controller::{
    compile::{CompileOptions, compile},
    kubernetes,
    standalone::{self, DirSource},
    status::StatusEntry,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "gatehouse-controller",
    version,
    about = "Gatehouse Gateway API controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run against a Kubernetes API server (in-cluster or KUBECONFIG).
    Kubernetes(kubernetes::KubernetesArgs),
    /// Run from a directory of manifests, with data planes as child processes.
    Standalone(standalone::StandaloneArgs),
    /// Compile a directory of manifests once and print snapshots and statuses.
    Compile {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write the CRDs of Gatehouse's own resources into a directory.
    Crds {
        #[arg(long, default_value = "crds")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Kubernetes(args) => kubernetes::run(args).await,
        Command::Standalone(args) => standalone::run(args).await,
        Command::Compile { dir } => print_compiled(dir),
        Command::Crds { out } => write_crds(out),
    }
}

fn print_compiled(dir: PathBuf) -> anyhow::Result<()> {
    let store = DirSource::new(dir).scan(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)?;
    let compiled = compile(&store, &CompileOptions::default());
    let statuses: Vec<_> = compiled
        .statuses
        .iter()
        .map(StatusEntry::to_debug_json)
        .collect();
    let out = serde_json::json!({ "snapshots": compiled.snapshots, "statuses": statuses });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn write_crds(out: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&out)?;
    for (name, yaml) in gatehouse_controller::api::crds() {
        let path = out.join(name);
        std::fs::write(&path, yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
