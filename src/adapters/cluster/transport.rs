//! The cluster's `Transport`: every event goes to this node's sessions at
//! once (through the tracker for sequenced kinds) and, queued without
//! waiting, on the bus for the other nodes. The core calls `deliver` after
//! the commit, so nothing is published before it is durable.

use std::sync::Arc;

use async_trait::async_trait;

use super::envelope::Route;
use super::node::Node;
use crate::adapters::wire;
use crate::domain::event::Event;
use crate::domain::ports::Transport;
use crate::domain::routing::Delivery;

/// Delivers events across the cluster.
pub struct ClusterTransport {
    node: Arc<Node>,
}

impl ClusterTransport {
    pub(super) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[async_trait]
impl Transport for ClusterTransport {
    async fn deliver(&self, delivery: Delivery, event: Event) {
        if delivery.is_empty() {
            return;
        }
        // Serialized once: local sessions and every remote node share it.
        let frame = wire::encode_event(&event);
        let route = Route::of(&event, delivery.except.as_ref());
        self.node.dispatch(&delivery.users, &route, &frame);
        self.node.publish(&delivery.users, &route, &frame);
    }
}
