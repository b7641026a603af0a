//! One kube-runtime watcher per kind, feeding the compile loop.
//!
//! A watcher lists, then watches; after a relist (its first list, or a
//! resync once a watch expired) it hands over the whole set of objects at
//! once, so the store never mixes a stale list with a new one, and the loop
//! knows when every kind has been listed at least once.

use futures::StreamExt;
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::warn;

use crate::store::{Kind, Object, ObjectKey};

/// What a watcher tells the compile loop.
#[derive(Debug)]
pub enum Change {
    /// Every object of `kind` now: replaces what the store had.
    Listed(Kind, Vec<Object>),
    Applied(Object),
    Deleted(ObjectKey),
}

/// Narrows a watch on the server when it can, else in the controller.
#[derive(Clone, Copy)]
pub struct Filter<K> {
    /// A field selector the API server applies, e.g. `type=kubernetes.io/tls`.
    pub fields: &'static str,
    /// The same test, for API servers that refuse the field selector.
    pub keep: fn(&K) -> bool,
}

/// Watches every object of `K` (all namespaces) matching `config` and
/// `filter`, turning each into an [`Object`] with `wrap`.
pub fn spawn<K>(
    client: Client,
    kind: Kind,
    config: watcher::Config,
    filter: Option<Filter<K>>,
    wrap: fn(K) -> Object,
    changes: mpsc::UnboundedSender<Change>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let api: Api<K> = Api::all(client);
        if let Some(filter) = &filter {
            let narrowed = config.clone().fields(filter.fields);
            if !run(&api, kind, narrowed, None, wrap, &changes).await {
                return;
            }
            warn!(%kind, fields = filter.fields, "the API server refuses this field selector; filtering in the controller");
        }
        run(&api, kind, config, filter.map(|f| f.keep), wrap, &changes).await;
    });
}

/// Waits until the CRD `crd` is installed and Established. Until then
/// `kind` counts as listed and empty: no object of it can exist. False
/// when the loop is gone.
pub async fn wait_for_crd(
    client: &Client,
    crd: &str,
    kind: Kind,
    changes: &mpsc::UnboundedSender<Change>,
) -> bool {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut told = false;
    loop {
        match api.get_opt(crd).await {
            Ok(Some(found)) if is_established(&found) => return true,
            Ok(found) => {
                if !told {
                    let state = if found.is_some() {
                        "not established yet"
                    } else {
                        "not installed"
                    };
                    warn!(%kind, crd, state, "CRD not served; checking again every 5 s");
                    told = true;
                    if changes.send(Change::Listed(kind, Vec::new())).is_err() {
                        return false;
                    }
                }
            }
            Err(error) => warn!(%kind, crd, %error, "reading the CRD failed; retrying"),
        }
        if changes.is_closed() {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

fn is_established(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Runs one watch. False when the loop is gone; true when the API server
/// rejected the first list as a bad request (an unsupported selector).
async fn run<K>(
    api: &Api<K>,
    kind: Kind,
    config: watcher::Config,
    keep: Option<fn(&K) -> bool>,
    wrap: fn(K) -> Object,
    changes: &mpsc::UnboundedSender<Change>,
) -> bool
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    {
        let kept = |object: &K| keep.is_none_or(|keep| keep(object));
        let stream = watcher(api.clone(), config).default_backoff();
        futures::pin_mut!(stream);
        let mut listing: Vec<Object> = Vec::new();
        while let Some(event) = stream.next().await {
            let change = match event {
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    continue;
                }
                Ok(watcher::Event::InitApply(object)) => {
                    if kept(&object) {
                        listing.push(wrap(object));
                    }
                    continue;
                }
                Ok(watcher::Event::InitDone) => Change::Listed(kind, std::mem::take(&mut listing)),
                // An object that stops passing the filter leaves the store.
                Ok(watcher::Event::Apply(object)) if !kept(&object) => {
                    Change::Deleted(wrap(object).key())
                }
                Ok(watcher::Event::Apply(object)) => Change::Applied(wrap(object)),
                Ok(watcher::Event::Delete(object)) => Change::Deleted(wrap(object).key()),
                Err(watcher::Error::InitialListFailed(kube::Error::Api(e)))
                    if e.code == 400 && keep.is_none() =>
                {
                    warn!(%kind, error = %e.message, "watch refused");
                    return true;
                }
                Err(error) => {
                    // The backoff retries; the store keeps the last state.
                    warn!(%kind, %error, "watch failed; retrying");
                    continue;
                }
            };
            if changes.send(change).is_err() {
                return false;
            }
        }
        false
    }
}
