//! Data plane processes, one per cluster group, as children of the
//! controller.
//!
//! Guarantees: a child that exits on its own is started again after a capped
//! backoff; a child is asked to stop (SIGTERM) when its group goes away or the
//! controller stops; children also receive SIGTERM if the controller dies
//! without cleaning up (Linux parent-death signal), so no data plane outlives
//! its controller.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use tokio::{process::Command, sync::watch, task::JoinHandle};
use tracing::{Instrument, info, info_span, warn};

pub struct Supervisor {
    dataplane: PathBuf,
    controller_url: String,
    children: BTreeMap<String, Child>,
}

struct Child {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Supervisor {
    pub fn new(dataplane: PathBuf, controller_url: String) -> Self {
        Self {
            dataplane,
            controller_url,
            children: BTreeMap::new(),
        }
    }

    /// Node id of the data plane serving `group`.
    pub fn node_id(group: &str) -> String {
        format!("standalone-{group}")
    }

    /// Runs exactly one data plane for each of `groups`.
    pub async fn ensure(&mut self, groups: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .children
            .keys()
            .filter(|g| !groups.contains(*g))
            .cloned()
            .collect();
        for group in gone {
            if let Some(child) = self.children.remove(&group) {
                child.stop().await;
            }
        }
        for group in groups {
            if !self.children.contains_key(group) {
                let child = self.start(group);
                self.children.insert(group.clone(), child);
            }
        }
    }

    pub async fn stop_all(&mut self) {
        let children = std::mem::take(&mut self.children);
        for (_, child) in children {
            child.stop().await;
        }
    }

    fn start(&self, group: &str) -> Child {
        let (stop, stopped) = watch::channel(false);
        let mut command = Command::new(&self.dataplane);
        command
            .args(["--controller", &self.controller_url])
            .args(["--group", group])
            .args(["--node-id", &Self::node_id(group)])
            .args(["--admin", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        set_parent_death_signal(&mut command);
        let span = info_span!("dataplane", group = %group);
        let task = tokio::spawn(keep_running(command, stopped).instrument(span));
        Child { stop, task }
    }
}

impl Child {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn keep_running(mut command: Command, mut stopped: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                warn!(%error, "cannot start the data plane");
                if wait_or_stop(&mut stopped, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        info!(pid = child.id(), "data plane started");
        let started = std::time::Instant::now();
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stopped.wait_for(|stop| *stop) => None,
        };
        match exited {
            Some(status) => {
                warn!(?status, "data plane exited; starting it again");
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(100);
                }
                if wait_or_stop(&mut stopped, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            None => {
                terminate(&mut child).await;
                return;
            }
        }
    }
}

/// Waits `delay`; true when asked to stop meanwhile.
async fn wait_or_stop(stopped: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    let asked = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stopped.wait_for(|stop| *stop) => true,
    };
    asked || *stopped.borrow()
}

/// SIGTERM, then SIGKILL if the child has not exited within five seconds.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    info!("data plane stopped");
}

fn set_parent_death_signal(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches only the child's own
    // process attributes between fork and exec.
    let controller = std::process::id();
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The controller may have died between fork and prctl, when no
            // signal would come any more: then do not start at all.
            if libc::getppid() as u32 != controller {
                return Err(std::io::Error::other("the controller exited"));
            }
            Ok(())
        });
    }
}
