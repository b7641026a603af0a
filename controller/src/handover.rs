//! Moving a Gateway from one cluster group to another without failing a
//! request (Kubernetes mode).
//!
//! Changing a Gateway's `gatehouse.dev/cluster-group` label moves it, but
//! clients keep reaching the old group's data planes (its Service address)
//! until they follow the Gateway's `status.addresses`. So a move has two
//! phases:
//!
//! 1. **Warming**: both groups serve the Gateway; its addresses are still
//!    the old group's. It ends when the new group has at least one data
//!    plane connected and every connected one has applied the new group's
//!    current snapshot (which holds the Gateway). A group without data
//!    planes never takes a Gateway over.
//! 2. **Draining**: the addresses are the new group's; the old group keeps
//!    serving the Gateway for the drain period, so that clients still on the
//!    old address are served while they move.
//!
//! Then the old group drops it. Moving a Gateway back to the old group
//! while the new one warms up ends the move at once; any other move
//! mid-move (back during the drain, or on to a third group) starts a new
//! move from the group whose addresses it reports. A group left draining
//! by such a second move stops serving at once: only one old group is kept.
//!
//! Pure: time and the groups' readiness come from the caller.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::compile::Handover;

type GatewayKey = (String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Move {
    from: String,
    to: String,
    /// `None` while warming; the end of the drain once draining.
    drain_until: Option<Instant>,
}

/// The moves in progress, and the group each Gateway was last compiled in.
#[derive(Debug)]
pub struct Handovers {
    drain: Duration,
    moves: BTreeMap<GatewayKey, Move>,
    /// The labelled group of each Gateway at the last `plan`.
    last: BTreeMap<GatewayKey, String>,
    /// False until the first `plan`: Gateways found at start are not moves.
    started: bool,
}

impl Handovers {
    pub fn new(drain: Duration) -> Self {
        Self {
            drain,
            moves: BTreeMap::new(),
            last: BTreeMap::new(),
            started: false,
        }
    }

    /// Takes the Gateways' labelled groups for the next compile and returns
    /// the handovers that compile must honour.
    pub fn plan(
        &mut self,
        groups: &BTreeMap<GatewayKey, String>,
    ) -> BTreeMap<GatewayKey, Handover> {
        self.moves.retain(|key, _| groups.contains_key(key));
        for (key, group) in groups {
            let Some(previous) = self.last.get(key).filter(|_| self.started) else {
                continue;
            };
            if previous == group {
                continue;
            }
            match self.moves.get(key) {
                // Back to the old group while the new one warms up: that
                // group still serves it and reports its addresses.
                Some(m) if m.from == *group && m.drain_until.is_none() => {
                    self.moves.remove(key);
                }
                Some(m) => {
                    let from = match m.drain_until {
                        None => m.from.clone(),
                        Some(_) => m.to.clone(),
                    };
                    self.moves.insert(key.clone(), moving(from, group));
                }
                None => {
                    self.moves
                        .insert(key.clone(), moving(previous.clone(), group));
                }
            }
        }
        self.last = groups.clone();
        self.started = true;
        self.current()
    }

    /// Advances the moves: a warmed new group takes the addresses, a drain
    /// that is over ends its move. True when the handovers changed, so that
    /// compile runs again.
    pub fn advance(&mut self, now: Instant, ready: impl Fn(&str) -> bool) -> bool {
        let mut changed = false;
        let drain = self.drain;
        self.moves.retain(|_, m| match m.drain_until {
            None if ready(&m.to) => {
                m.drain_until = Some(now + drain);
                changed = true;
                true
            }
            Some(until) if now >= until => {
                changed = true;
                false
            }
            _ => true,
        });
        changed
    }

    /// The handovers as compile takes them.
    pub fn current(&self) -> BTreeMap<GatewayKey, Handover> {
        self.moves
            .iter()
            .map(|(key, m)| {
                let handover = Handover {
                    from: m.from.clone(),
                    addresses_of_new_group: m.drain_until.is_some(),
                };
                (key.clone(), handover)
            })
            .collect()
    }
}

fn moving(from: String, to: &str) -> Move {
    Move {
        from,
        to: to.to_owned(),
        drain_until: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(entries: &[(&str, &str)]) -> BTreeMap<GatewayKey, String> {
        entries
            .iter()
            .map(|(name, group)| (("ns".to_owned(), name.to_string()), group.to_string()))
            .collect()
    }

    fn key(name: &str) -> GatewayKey {
        ("ns".into(), name.into())
    }

    #[test]
    fn a_move_warms_then_drains_then_ends() {
        let mut h = Handovers::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(h.plan(&groups(&[("gw", "a"), ("other", "a")])).is_empty());
        let plan = h.plan(&groups(&[("gw", "b"), ("other", "a")]));
        assert_eq!(
            plan.get(&key("gw")),
            Some(&Handover {
                from: "a".into(),
                addresses_of_new_group: false
            })
        );
        assert_eq!(plan.len(), 1);
        // The new group is not ready: nothing changes.
        assert!(!h.advance(t0, |_| false));
        assert!(!h.current()[&key("gw")].addresses_of_new_group);
        // Ready: the addresses move, the old group still serves.
        assert!(h.advance(t0, |g| g == "b"));
        assert!(h.current()[&key("gw")].addresses_of_new_group);
        assert!(!h.advance(t0 + Duration::from_secs(29), |_| true));
        // Drained: the move is over.
        assert!(h.advance(t0 + Duration::from_secs(30), |_| true));
        assert!(h.current().is_empty());
        assert!(h.plan(&groups(&[("gw", "b"), ("other", "a")])).is_empty());
    }

    #[test]
    fn gateways_found_at_start_or_added_later_are_not_moves() {
        let mut h = Handovers::new(Duration::from_secs(30));
        assert!(h.plan(&groups(&[("gw", "b")])).is_empty());
        assert!(h.plan(&groups(&[("gw", "b"), ("new", "c")])).is_empty());
    }

    #[test]
    fn moving_back_ends_the_move_and_moving_on_starts_from_the_reporting_group() {
        let mut h = Handovers::new(Duration::from_secs(30));
        h.plan(&groups(&[("gw", "a")]));
        h.plan(&groups(&[("gw", "b")]));
        assert!(h.plan(&groups(&[("gw", "a")])).is_empty(), "back to a");

        h.plan(&groups(&[("gw", "b")]));
        let plan = h.plan(&groups(&[("gw", "c")]));
        assert_eq!(plan[&key("gw")].from, "a", "b never took the addresses");

        h.advance(Instant::now(), |g| g == "c");
        let plan = h.plan(&groups(&[("gw", "d")]));
        assert_eq!(plan[&key("gw")].from, "c", "c reports the addresses");
        assert!(!plan[&key("gw")].addresses_of_new_group);
    }

    #[test]
    fn moving_back_during_the_drain_hands_over_from_the_new_group() {
        let mut h = Handovers::new(Duration::from_secs(30));
        h.plan(&groups(&[("gw", "a")]));
        h.plan(&groups(&[("gw", "b")]));
        h.advance(Instant::now(), |g| g == "b");
        // Clients may already be on b's addresses: b keeps serving and
        // reporting until a is ready again.
        let plan = h.plan(&groups(&[("gw", "a")]));
        assert_eq!(
            plan[&key("gw")],
            Handover {
                from: "b".into(),
                addresses_of_new_group: false
            }
        );
    }

    #[test]
    fn a_deleted_gateway_ends_its_move() {
        let mut h = Handovers::new(Duration::from_secs(30));
        h.plan(&groups(&[("gw", "a")]));
        h.plan(&groups(&[("gw", "b")]));
        assert!(h.plan(&groups(&[])).is_empty());
    }
}
