//! Revocations across the cluster: a device session ended on one node
//! closes its connections on every node (docs/cluster.md, "Revocation").
//!
//! The database is the source of truth; the bus only makes it quick. The
//! node that ended a session closes its own connections and publishes the
//! revocation on one channel every node listens to; each closes its own
//! within the bus's latency. The bus may lose it (it is at most once), so a
//! node also checks its connections' device sessions against the database
//! whenever its subscriptions are restored, and every `revocation_sweep`:
//! a node cut off from the bus still closes what the database says ended,
//! and refuses it at once over HTTP and on a new upgrade (those check the
//! database every time).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::bus::Publish;
use super::node::{Node, Outgoing};
use crate::domain::device::Revocation;
use crate::domain::{DeviceId, UserId};

/// A revocation as it crosses the bus.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Wire {
    /// The user.
    u: String,
    /// One device session; with none, every one but `k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
    /// The device session that stays, when `d` is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<String>,
}

impl From<&Revocation> for Wire {
    fn from(r: &Revocation) -> Self {
        match r {
            Revocation::Device { user, device } => Self {
                u: user.to_string(),
                d: Some(device.to_string()),
                k: None,
            },
            Revocation::AllBut { user, keep } => Self {
                u: user.to_string(),
                d: None,
                k: keep.as_ref().map(ToString::to_string),
            },
        }
    }
}

impl From<Wire> for Revocation {
    fn from(w: Wire) -> Self {
        let user = UserId::new(w.u);
        match w.d {
            Some(device) => Self::Device {
                user,
                device: DeviceId::new(device),
            },
            None => Self::AllBut {
                user,
                keep: w.k.map(DeviceId::new),
            },
        }
    }
}

/// What the channel every node hears revocations on has after the prefix.
pub(super) const REVOCATION_SUFFIX: &str = ":revoke";

impl Node {
    /// The channel every node hears revocations on.
    pub fn revocation_channel(&self) -> String {
        format!("{}{REVOCATION_SUFFIX}", self.settings.prefix)
    }

    /// Closes this node's connections that `what` ends, and tells the
    /// others, without waiting.
    pub fn revoke(&self, what: &Revocation) {
        self.registry.revoke(what);
        let payload = serde_json::to_vec(&Wire::from(what)).expect("plain strings serialize");
        let publish = Publish {
            channels: vec![self.revocation_channel()],
            payload,
        };
        if self
            .outgoing
            .try_send(Outgoing::Publish(publish, false))
            .is_err()
        {
            // The sweep closes them within `revocation_sweep` instead.
            self.metrics.cluster.publish_dropped.inc();
        }
    }

    /// A revocation another node published.
    pub fn revocation_arrived(&self, payload: &[u8]) {
        match serde_json::from_slice::<Wire>(payload) {
            Ok(wire) => self.registry.revoke(&wire.into()),
            Err(_) => warn!("dropped a revocation that does not parse"),
        }
    }

    /// Closes this node's connections whose device session the database
    /// says has ended: what the bus may have lost.
    pub async fn reload_revocations(self: &Arc<Self>, reason: &'static str) {
        let open = self.registry.devices();
        if open.is_empty() {
            return;
        }
        let devices: Vec<DeviceId> = open.iter().map(|(_, d)| d.clone()).collect();
        let now = crate::domain::Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
        let ended = match self.devices.ended_among(&devices, now).await {
            Ok(ended) => ended,
            Err(e) => {
                warn!(error = %e, reason, "cannot check open connections' sessions");
                return;
            }
        };
        for device in &ended {
            if let Some((user, _)) = open.iter().find(|(_, d)| d == device) {
                self.registry.revoke(&Revocation::Device {
                    user: user.clone(),
                    device: device.clone(),
                });
            }
        }
        if !ended.is_empty() {
            info!(
                reason,
                closed = ended.len(),
                "closed connections of ended sessions"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_crosses_the_bus_unchanged() {
        for r in [
            Revocation::Device {
                user: UserId::new("u"),
                device: DeviceId::new("d"),
            },
            Revocation::AllBut {
                user: UserId::new("u"),
                keep: Some(DeviceId::new("k")),
            },
            Revocation::AllBut {
                user: UserId::new("u"),
                keep: None,
            },
        ] {
            let bytes = serde_json::to_vec(&Wire::from(&r)).unwrap();
            let back: Revocation = serde_json::from_slice::<Wire>(&bytes).unwrap().into();
            assert_eq!(back, r);
        }
    }
}
