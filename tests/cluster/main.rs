//! Cluster tests (docs/cluster.md, section 8): several real server
//! processes on one PostgreSQL schema and one Redis of the test's own,
//! sometimes behind nginx, must behave to every client exactly like one
//! server. Each module takes one part of the guarantees of section 6:
//!
//! - `delivery`: `message` events exactly once and in seq order across
//!   nodes, also when publishes are dropped or delayed (fault hooks);
//! - `failover`: a node killed with SIGKILL, and restarted as itself;
//! - `outage`: Redis restarted, and its subscriber connections killed;
//! - `presence`: presence reads and the session limit, cluster-wide;
//! - `files`: files uploaded through one node read through another, on
//!   the S3 bucket every node shares;
//! - `balancer`: the contract's core flows through nginx round-robin;
//! - `harness`: the Redis and nginx helpers themselves, without a cluster.
//!
//! They need PostgreSQL, `redis-server`, `weed` (SeaweedFS, for the
//! shared blob store) and nginx; without one of them
//! they pass without running and say so on standard error, and under
//! `CI=true` they fail instead.

#[path = "../common/mod.rs"]
mod common;

mod balancer;
mod delivery;
mod failover;
mod files;
mod harness;
mod outage;
mod presence;
mod revocation;
mod support;
