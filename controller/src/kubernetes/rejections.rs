//! What data planes answered, across controller replicas. Every replica
//! serves snapshots, but only the Lease holder writes status and moves
//! Gateways between groups, and a data plane's Ack or Nack reaches only the
//! replica it is connected to. So each replica publishes, on a Lease of its
//! own (`<lease>-<identity>`, annotation `gatehouse.dev/data-planes`,
//! renewed every heartbeat while it has something to say), the rejections
//! its data planes made of their groups' current versions and the versions
//! they have applied, and collects the others'. The leader shows a
//! collected rejection when its version is the group's current one there
//! too, and counts a group ready when every data plane of it, on any
//! replica, applied the current version; compile is deterministic, so every
//! replica computes the same versions from the same objects. A replica that
//! stops renewing its Lease is forgotten after the Lease's duration.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::warn;

use crate::serve::SnapshotHub;

/// Label of the rejection Leases, naming the election Lease they belong to.
const LABEL: &str = "gatehouse.dev/rejections-of";
const ANNOTATION: &str = "gatehouse.dev/data-planes";
const FIELD_MANAGER: &str = "gatehouse-controller";

/// One data plane's rejection of a group's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub node: String,
    pub version: String,
    pub reason: String,
}

/// By cluster group.
pub type Rejections = BTreeMap<String, Rejection>;

/// What one replica's data planes answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub rejections: Rejections,
    /// Per group, the versions its connected data planes applied.
    pub applied: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Report {
    fn is_empty(&self) -> bool {
        self.rejections.is_empty() && self.applied.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Sharing {
    pub namespace: String,
    /// The election Lease's name.
    pub lease: String,
    pub identity: String,
    pub heartbeat: Duration,
}

/// Shares this replica's rejections and returns the other replicas'
/// (fresh ones only), kept up to date.
pub fn spawn(
    client: Client,
    sharing: Sharing,
    hub: Arc<SnapshotHub>,
) -> watch::Receiver<Vec<Report>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &sharing.namespace);
        let mut changes = hub.watch_changes();
        let mut published: Option<(Report, std::time::Instant)> = None;
        let mut collected: Option<std::time::Instant> = None;
        loop {
            let ours = local(&hub);
            // Written when it changes; a non-empty set is also renewed every
            // heartbeat, so that it stays fresh. Nothing to say and nothing
            // said costs no write.
            let write = match &published {
                None => true,
                Some((said, at)) => {
                    *said != ours || (!ours.is_empty() && at.elapsed() >= sharing.heartbeat)
                }
            };
            // The others' are read once a heartbeat, however often ours
            // change.
            let read = collected.is_none_or(|at| at.elapsed() >= sharing.heartbeat);
            let round = async {
                if write {
                    publish(&api, &sharing, &ours).await?;
                }
                match read {
                    true => collect(&api, &sharing).await.map(Some),
                    false => Ok(None),
                }
            };
            match tokio::time::timeout(sharing.heartbeat, round).await {
                Ok(Ok(others)) => {
                    if write {
                        published = Some((ours, std::time::Instant::now()));
                    }
                    if let Some(others) = others {
                        collected = Some(std::time::Instant::now());
                        tx.send_if_modified(|current| {
                            let changed = *current != others;
                            *current = others;
                            changed
                        });
                    }
                }
                Ok(Err(error)) => warn!(%error, "sharing data plane rejections failed"),
                Err(_) => warn!("sharing data plane rejections timed out"),
            }
            // Again at the next heartbeat, or sooner when our data planes
            // answer.
            let _ = tokio::time::timeout(sharing.heartbeat, changes.changed()).await;
        }
    });
    rx
}

/// This replica's data planes' rejections of their groups' current
/// snapshots.
fn local(hub: &SnapshotHub) -> Report {
    let rejections = hub
        .rejected_versions()
        .into_iter()
        .map(|(group, (node, version, reason))| {
            (
                group,
                Rejection {
                    node,
                    version,
                    reason,
                },
            )
        })
        .collect();
    Report {
        rejections,
        applied: hub.applied_versions(),
    }
}

fn lease_name(sharing: &Sharing) -> String {
    let name = format!(
        "{}-{}",
        sharing.lease,
        sharing.identity.to_ascii_lowercase()
    );
    name.chars().take(253).collect()
}

async fn publish(api: &Api<Lease>, sharing: &Sharing, ours: &Report) -> kube::Result<()> {
    let seconds = i32::try_from((sharing.heartbeat * 3).as_secs().max(1)).unwrap_or(i32::MAX);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(sharing)),
            labels: Some([(LABEL.to_owned(), sharing.lease.clone())].into()),
            annotations: Some(
                [(
                    ANNOTATION.to_owned(),
                    serde_json::to_string(ours).unwrap_or_default(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(sharing.identity.clone()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    let mut value = serde_json::to_value(&lease).map_err(kube::Error::SerdeError)?;
    value["apiVersion"] = "coordination.k8s.io/v1".into();
    value["kind"] = "Lease".into();
    api.patch(
        &lease_name(sharing),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await?;
    Ok(())
}

async fn collect(api: &Api<Lease>, sharing: &Sharing) -> kube::Result<Vec<Report>> {
    let params = ListParams::default().labels(&format!("{LABEL}={}", sharing.lease));
    let now = Timestamp::now().as_second();
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for lease in api.list(&params).await? {
        let spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() == Some(sharing.identity.as_str()) {
            continue;
        }
        let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        let renewed = spec.renew_time.map_or(0, |t| t.0.as_second());
        let fresh = renewed + lasts >= now;
        // A replica that went away (a rollout renames every pod) leaves
        // its Lease behind: the next replica to look removes it.
        if renewed + lasts * 10 < now
            && let Some(name) = lease.metadata.name.clone()
        {
            gone.push(name);
        }
        let shared = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .and_then(|json| serde_json::from_str::<Report>(json).ok());
        if let (true, Some(report)) = (fresh, shared)
            && !report.is_empty()
        {
            out.push(report);
        }
    }
    for name in gone {
        if let Err(error) = api.delete(&name, &Default::default()).await {
            tracing::debug!(%name, %error, "removing a departed replica's rejection Lease");
        }
    }
    Ok(out)
}

/// This replica's rejections and the others' that are of the group's
/// current version here, as (node, reason) by group.
pub fn merged(hub: &SnapshotHub, others: &[Report]) -> BTreeMap<String, (String, String)> {
    let mut out = hub.rejections();
    for report in others {
        for (group, r) in &report.rejections {
            if hub.current_version(group).as_deref() == Some(r.version.as_str()) {
                out.entry(group.clone())
                    .or_insert_with(|| (r.node.clone(), r.reason.clone()));
            }
        }
    }
    out
}

/// Whether `group` has a data plane connected to any replica and every one
/// of them applied the group's current version here.
pub fn group_ready(hub: &SnapshotHub, others: &[Report], group: &str) -> bool {
    let Some(current) = hub.current_version(group) else {
        return false;
    };
    let local = hub.applied_versions().remove(group).unwrap_or_default();
    let mut applied = local
        .iter()
        .chain(others.iter().filter_map(|r| r.applied.get(group)).flatten());
    let mut any = false;
    applied.all(|version| {
        any = true;
        *version == current
    }) && any
}
