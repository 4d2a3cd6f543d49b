//! The test harness shared by the end-to-end, the browser and the cluster
//! test binaries: the real server binary (`server`), a real WebSocket
//! client (`client`), and for the cluster a Redis (`redis`) and an nginx in
//! front of the nodes (`nginx`) of the test's own.

// Each test binary uses its own part of the harness.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod nginx;
pub mod redis;
pub mod server;

pub use client::Client;
pub use nginx::TestNginx;
pub use redis::TestRedis;
pub use server::{Account, Backend, TestServer, WAIT};
