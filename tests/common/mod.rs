//! The test harness shared by the end-to-end and the browser test
//! binaries: the real server binary (`server`) and a real WebSocket client
//! (`client`).

// Each test binary uses its own part of the harness.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod server;

pub use client::Client;
pub use server::{Account, Backend, TestServer, WAIT};
