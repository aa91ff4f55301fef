//! The registry's behaviour, proved the same way against both backends: the embedded one and
//! the real Redis on this machine (127.0.0.1:6379, or `AETHEX_TEST_REDIS_URL`). A missing
//! Redis fails these tests with the fix; they never skip.

use std::time::Duration;

use cluster::{EdgeRecord, LiveRecord, Registry};

fn redis_url() -> String {
    std::env::var("AETHEX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis registry under a prefix no other test uses.
async fn redis() -> Registry {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("aethex-test-{}-{nanos}", std::process::id());
    Registry::redis(&redis_url(), &prefix)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Redis at {} ({e}); start it: service redis-server start \
             (or set AETHEX_TEST_REDIS_URL)",
                redis_url()
            )
        })
}

/// Two handles on the same Redis prefix: two origins sharing the registry.
async fn redis_pair() -> (Registry, Registry) {
    let a = redis().await;
    let Registry::Redis(r) = &a else {
        unreachable!()
    };
    let b = Registry::redis(&redis_url(), r.prefix()).await.unwrap();
    (a, b)
}

fn edge(id: &str, region: &str, viewers: u32, via: &str) -> EdgeRecord {
    EdgeRecord {
        node_id: id.into(),
        region: region.into(),
        public_url: format!("http://{id}.example:8080"),
        viewers,
        capacity: 100,
        draining: false,
        via: via.into(),
    }
}

const TTL: Duration = Duration::from_secs(30);

async fn routes_to_the_least_loaded_edge_of_the_region(r: Registry) {
    r.put_edge(&edge("eu-1", "eu", 40, "o"), TTL).await.unwrap();
    r.put_edge(&edge("eu-2", "eu", 10, "o"), TTL).await.unwrap();
    r.put_edge(&edge("us-1", "us", 0, "o"), TTL).await.unwrap();
    let picked = r.pick_edge("eu", "o").await.unwrap().unwrap();
    assert_eq!(picked.node_id, "eu-2");
    // A load report moves the choice.
    r.put_edge(&edge("eu-2", "eu", 90, "o"), TTL).await.unwrap();
    assert_eq!(
        r.pick_edge("eu", "o").await.unwrap().unwrap().node_id,
        "eu-1"
    );
    // A node never routes to itself, and an unknown region has no edge.
    assert_eq!(r.pick_edge("us", "us-1").await.unwrap(), None);
    assert_eq!(r.pick_edge("ap", "o").await.unwrap(), None);
    assert_eq!(r.edges(Some("eu")).await.unwrap().len(), 2);
    assert_eq!(r.edges(None).await.unwrap().len(), 3);
}

async fn an_edge_that_stops_reporting_disappears_after_its_ttl(r: Registry) {
    r.put_edge(&edge("eu-1", "eu", 0, "o"), Duration::from_millis(300))
        .await
        .unwrap();
    r.put_edge(&edge("eu-2", "eu", 50, "o"), TTL).await.unwrap();
    assert_eq!(
        r.pick_edge("eu", "o").await.unwrap().unwrap().node_id,
        "eu-1"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        r.pick_edge("eu", "o").await.unwrap().unwrap().node_id,
        "eu-2"
    );
    assert_eq!(r.edges(None).await.unwrap().len(), 1);
}

async fn a_draining_or_removed_edge_gets_no_viewers(r: Registry) {
    let mut e = edge("eu-1", "eu", 0, "o");
    r.put_edge(&e, TTL).await.unwrap();
    e.draining = true;
    r.put_edge(&e, TTL).await.unwrap();
    assert_eq!(r.pick_edge("eu", "o").await.unwrap(), None);
    r.put_edge(&edge("eu-2", "eu", 0, "o"), TTL).await.unwrap();
    // The edge moved to origin "p": the late goodbye of origin "o" leaves it registered.
    r.put_edge(&edge("eu-2", "eu", 0, "p"), TTL).await.unwrap();
    r.remove_edge("eu-2", "o").await.unwrap();
    assert_eq!(
        r.pick_edge("eu", "o").await.unwrap().unwrap().node_id,
        "eu-2"
    );
    r.remove_edge("eu-2", "p").await.unwrap();
    assert_eq!(r.pick_edge("eu", "o").await.unwrap(), None);
}

async fn a_restarted_node_forgets_what_it_wrote_before(r: Registry) {
    r.put_edge(&edge("eu-1", "eu", 0, "origin-a"), TTL)
        .await
        .unwrap();
    r.put_edge(&edge("us-1", "us", 0, "origin-b"), TTL)
        .await
        .unwrap();
    let live = |ch: &str, node: &str| LiveRecord {
        channel: ch.into(),
        node_id: node.into(),
        public_url: format!("http://{node}"),
    };
    r.put_live(&live("show", "origin-a"), TTL).await.unwrap();
    r.put_live(&live("news", "origin-b"), TTL).await.unwrap();
    r.forget_node("origin-a").await.unwrap();
    let edges = r.edges(None).await.unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].node_id, "us-1");
    assert_eq!(r.live("show").await.unwrap(), None);
    assert_eq!(r.live("news").await.unwrap().unwrap().node_id, "origin-b");
}

async fn a_live_channel_is_removed_only_by_the_node_that_has_it(r: Registry) {
    let rec = LiveRecord {
        channel: "show".into(),
        node_id: "origin-b".into(),
        public_url: "http://b".into(),
    };
    r.put_live(&rec, TTL).await.unwrap();
    // The publisher moved from origin-a to origin-b; origin-a's late "offline" is ignored.
    r.remove_live("show", "origin-a").await.unwrap();
    assert_eq!(r.live("show").await.unwrap(), Some(rec));
    r.remove_live("show", "origin-b").await.unwrap();
    assert_eq!(r.live("show").await.unwrap(), None);
    r.put_live(
        &LiveRecord {
            channel: "brief".into(),
            node_id: "origin-b".into(),
            public_url: "http://b".into(),
        },
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.live("brief").await.unwrap(), None);
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $name() { super::$name(cluster::Registry::embedded()).await })*
        }
        mod in_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::redis().await).await })*
        }
    };
}

both_backends!(
    routes_to_the_least_loaded_edge_of_the_region,
    an_edge_that_stops_reporting_disappears_after_its_ttl,
    a_draining_or_removed_edge_gets_no_viewers,
    a_restarted_node_forgets_what_it_wrote_before,
    a_live_channel_is_removed_only_by_the_node_that_has_it,
);

#[tokio::test]
async fn two_origins_sharing_redis_see_each_others_edges_and_channels() {
    let (a, b) = redis_pair().await;
    a.put_edge(&edge("eu-1", "eu", 3, "origin-a"), TTL)
        .await
        .unwrap();
    b.put_edge(&edge("eu-2", "eu", 1, "origin-b"), TTL)
        .await
        .unwrap();
    b.put_live(
        &LiveRecord {
            channel: "show".into(),
            node_id: "origin-b".into(),
            public_url: "http://b".into(),
        },
        TTL,
    )
    .await
    .unwrap();
    assert_eq!(
        a.pick_edge("eu", "origin-a")
            .await
            .unwrap()
            .unwrap()
            .node_id,
        "eu-2"
    );
    assert_eq!(a.live("show").await.unwrap().unwrap().node_id, "origin-b");
    assert_eq!(b.edges(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_wrong_redis_url_fails_at_start_with_a_clear_error() {
    let err = match Registry::redis("redis://127.0.0.1:1", "x").await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("redis:"), "{err}");
}
