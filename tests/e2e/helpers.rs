//! Test harness: the shared server and client (`tests/common`, also used
//! by the browser tests), and the per-backend test macro.

#[path = "../common/mod.rs"]
mod common;

pub use common::{Account, Backend, Client, TestServer, WAIT};

/// The seqs of the messages of a `getHistory` ack, in order.
pub fn seqs(page: &serde_json::Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// Declares an end-to-end test once per backend, as `NAME::sqlite` and
/// `NAME::postgres`, from `async fn NAME(backend: Backend)`; a test skipped
/// for want of PostgreSQL returns early (see `TestServer::start_on`).
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    super::$test($crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$test($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}
pub(crate) use on_each_backend;
