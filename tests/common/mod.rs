//! The test harness shared by the end-to-end, the browser and the cluster
//! test binaries: the real server binary (`server`), a real WebSocket
//! client (`client`), and for the cluster a Redis (`redis`), an nginx in
//! front of the nodes (`nginx`) of the test's own, and an S3 blob store the
//! nodes share (`seaweed`).

// Each test binary uses its own part of the harness.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod nginx;
pub mod redis;
/// The SeaweedFS starter of the blob store's unit tests, the same file.
#[path = "../../src/adapters/blob/seaweed.rs"]
pub mod seaweed;
pub mod server;

pub use client::Client;
pub use nginx::TestNginx;
pub use redis::TestRedis;
pub use server::{Account, Backend, TestServer, WAIT};
