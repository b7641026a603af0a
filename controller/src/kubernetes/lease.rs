//! Leader election on a coordination.k8s.io/v1 Lease, the way Kubernetes
//! components do it: the holder renews `renewTime` every `renew` interval;
//! a candidate takes the Lease over once `renewTime + leaseDurationSeconds`
//! has passed. Every write carries the Lease's resourceVersion, so two
//! candidates can never both win the same round (the loser gets 409).
//!
//! Only the leader writes status; every replica compiles and serves
//! snapshots, so losing the lease costs nothing on the data path.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{PostParams, entry::Entry},
};
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
}

/// Runs the election forever, keeping `leader` up to date.
pub fn spawn(client: Client, config: LeaseConfig, leader: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        loop {
            // A round that cannot finish before the next one is due loses
            // the lease here, before another replica may take it over.
            let held = match tokio::time::timeout(config.renew, try_hold(&api, &config)).await {
                Ok(Ok(held)) => held,
                Ok(Err(error)) => {
                    warn!(%error, lease = %config.name, "lease round failed");
                    false
                }
                Err(_) => {
                    warn!(lease = %config.name, "lease round timed out");
                    false
                }
            };
            let was = leader.swap(held, Ordering::SeqCst);
            if held != was {
                info!(identity = %config.identity, leader = held, "leadership changed");
            }
            tokio::time::sleep(config.renew).await;
        }
    });
}

/// One round: create, renew or take over the Lease. True when we hold it.
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> kube::Result<bool> {
    let now = Timestamp::now();
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let ours = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(seconds),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match api.entry(&config.name).await? {
        Entry::Vacant(vacant) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    ..Default::default()
                },
                spec: Some(ours(0, None)),
            };
            match vacant.insert(lease).commit(&PostParams::default()).await {
                Ok(()) => Ok(true),
                Err(kube::api::entry::CommitError::Save(kube::Error::Api(e))) if e.code == 409 => {
                    Ok(false)
                }
                Err(error) => Err(commit_error(error)),
            }
        }
        Entry::Occupied(mut occupied) => {
            let spec = occupied.get().spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
                let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
                renewed.0.as_second() + lasts < now.as_second()
            });
            let transitions = spec.lease_transitions.unwrap_or(0);
            let next = if holder == config.identity {
                ours(transitions, spec.acquire_time.clone())
            } else if holder.is_empty() || expired {
                ours(transitions + 1, None)
            } else {
                return Ok(false);
            };
            occupied.get_mut().spec = Some(next);
            match occupied.commit(&PostParams::default()).await {
                Ok(()) => Ok(true),
                Err(kube::api::entry::CommitError::Save(kube::Error::Api(e))) if e.code == 409 => {
                    Ok(false)
                }
                Err(error) => Err(commit_error(error)),
            }
        }
    }
}

fn commit_error(error: kube::api::entry::CommitError) -> kube::Error {
    match error {
        kube::api::entry::CommitError::Save(e) => e,
        kube::api::entry::CommitError::Validate(e) => {
            kube::Error::Service(Box::new(std::io::Error::other(e.to_string())))
        }
    }
}
