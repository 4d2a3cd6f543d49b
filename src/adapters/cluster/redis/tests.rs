use super::presence::test_redis;
use super::*;
use crate::adapters::cluster::contract;
use crate::adapters::cluster::fault::Faults;

#[tokio::test]
async fn redis_keeps_the_bus_contract() {
    let Some(redis) = test_redis::connect().await else {
        return;
    };
    let settings = ClusterSettings {
        redis_url: test_redis::url(),
        prefix: redis.prefix.clone(),
        node_id: "n1".to_owned(),
        presence_ttl: Duration::from_secs(12),
        reorder: Duration::from_millis(200),
        resync_every: Duration::from_secs(10),
        probe_after: Duration::from_secs(5),
        revocation_sweep: Duration::from_secs(3600),
        faults: Faults::None,
    };
    let a = connect(&settings).await.unwrap().bus;
    let b = connect(&settings).await.unwrap().bus;
    contract::check(a, b, &redis.prefix).await;
}
