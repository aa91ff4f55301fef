//! Routing and access at the HTTP layer (fake media engine, real registry): 307 to an edge of
//! the viewer's region, never for the node's own region; playback tokens for private channels;
//! draining nodes take no new viewers.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cluster::{EdgeRecord, Registry, TokenKey};
use common::{app_with, FakeSfu, SECRET};
use signaling::Cluster;
use tower::ServiceExt;

fn whep(uri: &str) -> axum::http::request::Builder {
    Request::post(uri).header("content-type", "application/sdp")
}

fn offer() -> Body {
    Body::from(common::OFFER)
}

async fn body_json(resp: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn edge(id: &str, region: &str, viewers: u32) -> EdgeRecord {
    EdgeRecord {
        node_id: id.into(),
        region: region.into(),
        public_url: format!("http://{id}.test:8080"),
        viewers,
        capacity: 100,
        draining: false,
        via: "origin".into(),
    }
}

async fn origin_with_edges() -> axum::Router {
    let registry = Registry::embedded();
    let ttl = Duration::from_secs(30);
    registry
        .put_edge(&edge("eu-a", "eu", 30), ttl)
        .await
        .unwrap();
    registry
        .put_edge(&edge("eu-b", "eu", 5), ttl)
        .await
        .unwrap();
    registry
        .put_edge(&edge("us-a", "us", 0), ttl)
        .await
        .unwrap();
    let mut cluster = Cluster::new("origin".into(), "home".into(), TokenKey::new(SECRET));
    cluster.registry = Some(registry);
    cluster.rules = cluster::RegionRules::parse(&["10.0.0.0/8=us"]).unwrap();
    app_with(FakeSfu::default(), cluster).await.0
}

#[tokio::test]
async fn a_viewer_of_another_region_is_redirected_to_its_least_loaded_edge() {
    let app = origin_with_edges().await;
    let resp = app
        .clone()
        .oneshot(
            whep("/whep/demo?region=eu&layer=low")
                .body(offer())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        resp.headers()["location"],
        "http://eu-b.test:8080/whep/demo?region=eu&layer=low"
    );
    assert_eq!(body_json(resp).await["node"], "eu-b");
    // The same through the header a CDN or geo proxy sets.
    let resp = app
        .oneshot(
            whep("/whep/demo")
                .header("x-region", "us")
                .body(offer())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        resp.headers()["location"],
        "http://us-a.test:8080/whep/demo"
    );
}

#[tokio::test]
async fn viewers_of_the_nodes_own_region_or_of_a_region_without_edges_are_served_here() {
    let app = origin_with_edges().await;
    for uri in [
        "/whep/demo?region=home",
        "/whep/demo?region=ap",
        "/whep/demo",
    ] {
        let resp = app
            .clone()
            .oneshot(whep(uri).body(offer()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{uri}");
    }
}

#[tokio::test]
async fn a_private_channel_needs_a_valid_token_for_it() {
    let cluster = Cluster::new("origin".into(), String::new(), TokenKey::new(SECRET));
    let (app, _) = app_with(FakeSfu::default(), cluster).await;
    let key = TokenKey::new(SECRET);
    let now = cluster::token::unix_now();
    let cases = [
        (String::new(), StatusCode::UNAUTHORIZED, "required"),
        (
            format!("?token={}", key.sign("secret", now + 60)),
            StatusCode::CREATED,
            "",
        ),
        (
            format!("?token={}", key.sign("secret", now - 1)),
            StatusCode::UNAUTHORIZED,
            "expired",
        ),
        (
            format!("?token={}", key.sign("demo", now + 60)),
            StatusCode::UNAUTHORIZED,
            "another channel",
        ),
        (
            format!(
                "?token={}",
                TokenKey::new(b"not-the-cluster-secret").sign("secret", now + 60)
            ),
            StatusCode::UNAUTHORIZED,
            "signature",
        ),
        (
            "?token=garbage".into(),
            StatusCode::UNAUTHORIZED,
            "malformed",
        ),
    ];
    for (query, status, says) in cases {
        let resp = app
            .clone()
            .oneshot(whep(&format!("/whep/secret{query}")).body(offer()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{query}");
        if status == StatusCode::UNAUTHORIZED {
            let body = body_json(resp).await;
            assert_eq!(body["code"], "unauthorized");
            assert!(body["error"].as_str().unwrap().contains(says), "{body}");
        }
    }
    // A bearer header works too, and a public channel needs nothing.
    let token = key.sign("secret", now + 60);
    let resp = app
        .clone()
        .oneshot(
            whep("/whep/secret")
                .header("authorization", format!("Bearer {token}"))
                .body(offer())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = app
        .oneshot(whep("/whep/demo").body(offer()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_draining_node_without_an_upstream_refuses_new_viewers_with_503() {
    let cluster = Cluster::new("origin".into(), String::new(), TokenKey::new(SECRET));
    cluster.start_draining();
    let (app, _) = app_with(FakeSfu::default(), cluster).await;
    let resp = app
        .oneshot(whep("/whep/demo").body(offer()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(body_json(resp).await["code"], "draining");
}
