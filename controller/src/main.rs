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
    /// Tell, offline, what a request meets: listener, route rule and
    /// gatehouse.dev filter chain, compiled from a directory of manifests.
    Explain {
        #[arg(long)]
        dir: PathBuf,
        /// "METHOD URL", e.g. 'GET https://shop.example.com/cart'.
        #[arg(long)]
        request: String,
        /// A request header, "Name: value"; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
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
        Command::Explain {
            dir,
            request,
            headers,
        } => explain(dir, &request, &headers),
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

fn explain(dir: PathBuf, request: &str, headers: &[String]) -> anyhow::Result<()> {
    let question = gatehouse_controller::explain::Question::parse(request, headers)?;
    let store = DirSource::new(dir).scan(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)?;
    let compiled = compile(&store, &CompileOptions::default());
    let snapshots = compiled
        .snapshots
        .into_iter()
        .map(|(group, s)| (group, std::sync::Arc::new(s)))
        .collect();
    print!(
        "{}",
        gatehouse_controller::explain::explain(&snapshots, &question)
    );
    Ok(())
}
