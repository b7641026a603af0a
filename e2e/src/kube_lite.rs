//! A real Kubernetes API server for tests: kube-lite, etcd plus an API
//! server built from Debian's `k8s.io/apiserver` libraries (see
//! `../shared/kube-lite/README.md` beside this repository). It serves the
//! built-in resources with their real OpenAPI schemas and CRDs with their
//! structural schemas, so server-side apply with strict field validation
//! rejects what a real cluster would; it runs no controllers, scheduler or
//! kubelet.
//!
//! ```no_run
//! # use gatehouse_e2e::kube_lite::KubeLite;
//! let kube = KubeLite::start();
//! kube.apply_gateway_api_crds().unwrap();
//! kube.apply_str("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n").unwrap();
//! // KUBECONFIG for a process under test:
//! let kubeconfig = kube.kubeconfig();
//! # let _ = kubeconfig;
//! ```
//!
//! Each [`KubeLite`] is a separate server on free loopback ports (about 2 s
//! to start), so tests do not share state. `setup.sh` must have built it
//! once; a missing build fails the test with the command to run, never skips.
//!
//! Environment: `KUBE_LITE_DIR` (default `../shared/kube-lite` from the
//! repository root), `GATEWAY_API_CRDS_DIR` (default
//! `../shared/gateway-api/v1.6.1/config/crd/standard`), `KUBECTL` (default
//! `kubectl` on PATH), and `KUBE_LITE_CACHE`, which `setup.sh` and
//! `start.sh` read.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

/// Field manager of every apply made through [`KubeLite`].
pub const FIELD_MANAGER: &str = "gatehouse-e2e";

/// The repository root (the workspace holding this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the workspace root")
        .to_path_buf()
}

/// The kube-lite scripts: `$KUBE_LITE_DIR`, or `../shared/kube-lite` from
/// the repository root.
pub fn kube_lite_dir() -> PathBuf {
    std::env::var_os("KUBE_LITE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| beside_repo("shared/kube-lite"))
}

fn beside_repo(path: &str) -> PathBuf {
    let path = repo_root().join("..").join(path);
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The Gateway API standard-channel CRDs (v1.6.1): `$GATEWAY_API_CRDS_DIR`,
/// or `../shared/gateway-api/v1.6.1/config/crd/standard` from the
/// repository root.
pub fn gateway_api_crds_dir() -> PathBuf {
    std::env::var_os("GATEWAY_API_CRDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| beside_repo("shared/gateway-api/v1.6.1/config/crd/standard"))
}

pub fn kubectl_program() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// A running kube-lite API server, killed (and its state removed) on drop.
///
/// Guarantees: the server stops even when the test process is killed
/// without unwinding (a watchdog process runs start.sh's stop script once
/// this process is gone).
/// Caveats: the methods block while kubectl runs; from async code they hold
/// a runtime thread for that time, which tests can afford.
pub struct KubeLite {
    kubeconfig: PathBuf,
    workdir: PathBuf,
    stop: PathBuf,
    watchdog: Option<Child>,
}

impl KubeLite {
    /// Starts a fresh server and waits until it serves requests. Panics
    /// when it cannot, saying how to set kube-lite up if that is the cause.
    pub fn start() -> Self {
        Self::try_start().unwrap_or_else(|error| panic!("{error:#}"))
    }

    pub fn try_start() -> anyhow::Result<Self> {
        let dir = kube_lite_dir();
        let start = dir.join("start.sh");
        if !start.exists() {
            bail!(
                "kube-lite not found at {} (set KUBE_LITE_DIR to its directory)",
                dir.display()
            );
        }
        let output = Command::new("bash")
            .arg(&start)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", start.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            if stderr.contains("setup.sh") {
                bail!(
                    "kube-lite is not set up: run `{}` once (builds the API server from \
                     Debian packages, about 5 minutes, cached), then rerun the tests.\n\
                     start.sh said: {}",
                    dir.join("setup.sh").display(),
                    stderr.trim()
                );
            }
            bail!(
                "kube-lite start.sh failed ({}): {}",
                output.status,
                stderr.trim()
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let field = |name: &str| -> anyhow::Result<PathBuf> {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                .map(PathBuf::from)
                .with_context(|| format!("start.sh printed no {name}=: {stdout}"))
        };
        let mut kube = Self {
            kubeconfig: field("KUBECONFIG")?,
            workdir: field("WORKDIR")?,
            stop: field("STOP")?,
            watchdog: None,
        };
        kube.watchdog = Some(kube.spawn_watchdog()?);
        Ok(kube)
    }

    /// Runs the stop script once this process has exited, whatever ends it.
    fn spawn_watchdog(&self) -> anyhow::Result<Child> {
        Command::new("sh")
            .args([
                "-c",
                r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec "$2""#,
                "kube-lite-watchdog",
            ])
            .arg(std::process::id().to_string())
            .arg(&self.stop)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the kube-lite watchdog")
    }

    /// The kubeconfig file (admin token, current context namespace
    /// `default`): `KUBECONFIG` for kubectl or a controller under test.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The server's state directory (logs: `apiserver.log`, `etcd.log`).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// A kubectl command for this server, with its own discovery cache (so
    /// CRDs applied a moment ago are found).
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(kubectl_program());
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.workdir.join("kubectl-cache"))
            .stdin(Stdio::null());
        command
    }

    /// Runs kubectl with `args` (and `stdin`, if given); returns its stdout,
    /// or an error carrying its stderr.
    pub fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut command = self.kubectl();
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("running {} (is kubectl installed?)", kubectl_program()))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes())
                .context("writing kubectl's stdin")?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn apply_args(source: &str) -> [&str; 6] {
        [
            "apply",
            "--server-side",
            "--validate=strict",
            "--field-manager",
            FIELD_MANAGER,
            source,
        ]
    }

    /// `kubectl apply --server-side --validate=strict` of a file or a
    /// directory (its `.yaml`, `.yml` and `.json` files).
    pub fn apply_file(&self, path: &Path) -> anyhow::Result<String> {
        let source = format!("--filename={}", path.display());
        self.run_kubectl(&Self::apply_args(&source), None)
    }

    /// The same, of manifests in a string (multi-document YAML or JSON).
    pub fn apply_str(&self, manifests: &str) -> anyhow::Result<String> {
        self.run_kubectl(&Self::apply_args("--filename=-"), Some(manifests))
    }

    /// Applies the Gateway API standard-channel CRDs (and the
    /// ValidatingAdmissionPolicy shipped beside them) and waits until every
    /// CRD is Established, so their kinds can be applied next.
    pub fn apply_gateway_api_crds(&self) -> anyhow::Result<()> {
        let dir = gateway_api_crds_dir();
        if !dir.is_dir() {
            bail!(
                "Gateway API CRDs not found at {} (set GATEWAY_API_CRDS_DIR)",
                dir.display()
            );
        }
        self.apply_file(&dir)?;
        self.wait_crds_established(Duration::from_secs(60))
    }

    /// Waits until every CRD has the condition Established. (`kubectl wait`
    /// takes over a second even when they already are.)
    pub fn wait_crds_established(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let list = self.get_json(&["customresourcedefinitions"])?;
            let pending: Vec<_> = list["items"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|crd| !is_established(crd))
                .map(|crd| crd["metadata"]["name"].to_string())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "CRDs not Established after {timeout:?}: {}",
                    pending.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--output", "json"]);
        let stdout = self.run_kubectl(&all, None)?;
        serde_json::from_str(&stdout).context("kubectl get printed no JSON")
    }
}

fn is_established(crd: &Value) -> bool {
    crd["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

impl Drop for KubeLite {
    /// SIGKILL, not the stop script's SIGTERM: a test server needs no
    /// graceful shutdown, and the API server's takes about 4 s.
    fn drop(&mut self) {
        for process in ["apiserver", "etcd"] {
            let pid_file = self.workdir.join(format!("{process}.pid"));
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|pid| pid.trim().parse::<libc::pid_t>().ok())
            {
                // SAFETY: kill(2) with a valid signal on the pid start.sh
                // recorded for the process it started for this handle.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if std::fs::remove_dir_all(&self.workdir).is_err() {
            // etcd may still be writing as it dies.
            std::thread::sleep(Duration::from_millis(100));
            let _ = std::fs::remove_dir_all(&self.workdir);
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}
