//! The HTTP layer against a fake media engine: no ports, no media. Proves the mapping from
//! engine results to WHIP/WHEP responses, and that session resources follow the engine.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{app, FakeSfu, OFFER};
use sfu::{PeerId, Pin, SfuError, StreamId};
use tower::ServiceExt;

fn whep(channel: &str) -> Request<Body> {
    Request::post(format!("/whep/{channel}"))
        .header("content-type", "application/sdp")
        .body(Body::from(OFFER))
        .unwrap()
}

async fn code_of(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn engine_errors_map_to_stable_statuses_and_codes() {
    let cases = [
        (
            SfuError::Offline(StreamId::new("demo").unwrap()),
            StatusCode::NOT_FOUND,
            "offline",
        ),
        (SfuError::Full(10), StatusCode::SERVICE_UNAVAILABLE, "full"),
        (
            SfuError::BadOffer("x".into()),
            StatusCode::BAD_REQUEST,
            "bad_sdp",
        ),
        (
            SfuError::CodecMismatch("x".into()),
            StatusCode::BAD_REQUEST,
            "codec_mismatch",
        ),
        (
            SfuError::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
    ];
    for (err, status, code) in cases {
        let fake = FakeSfu::default();
        *fake.subscribe_error.lock().unwrap() = Some(err);
        let (app, sessions) = app(fake).await;
        let resp = app.oneshot(whep("demo")).await.unwrap();
        assert_eq!(resp.status(), status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(resp.headers().contains_key("retry-after"));
        }
        assert_eq!(code_of(resp).await, code);
        assert!(sessions.is_empty(), "a failed subscribe leaves no resource");
    }
}

#[tokio::test]
async fn delete_closes_the_engine_session_and_forgets_the_resource() {
    let fake = FakeSfu::default();
    let (app, sessions) = app(fake.clone()).await;
    let resp = app.clone().oneshot(whep("demo")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(sessions.len(), 1);
    let del = Request::delete(&location).body(Body::empty()).unwrap();
    assert_eq!(
        app.clone().oneshot(del).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(*fake.closed.lock().unwrap(), vec![PeerId(8)]);
    assert!(sessions.is_empty());
    // A WHEP resource is not reachable under /whip.
    let wrong = location.replacen("/whep/", "/whip/", 1);
    let resp = app
        .oneshot(Request::delete(wrong).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn engine_closing_a_peer_forgets_its_resource() {
    let (app, sessions) = app(FakeSfu::default()).await;
    let resp = app.oneshot(whep("demo")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    sessions.forget_peer(PeerId(8));
    assert!(sessions.is_empty());
}

fn whep_offer(uri: &str, ufrag: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/sdp")
        .body(Body::from(format!("{OFFER}a=ice-ufrag:{ufrag}\r\n")))
        .unwrap()
}

#[tokio::test]
async fn whep_layer_query_pins_the_viewer_and_bad_values_are_400() {
    let fake = FakeSfu::default();
    let (app, _) = app(fake.clone()).await;
    let ok = app
        .clone()
        .oneshot(whep_offer("/whep/demo?layer=high", "u1"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    let plain = app.clone().oneshot(whep("demo")).await.unwrap();
    assert_eq!(plain.status(), StatusCode::CREATED);
    assert_eq!(*fake.pins.lock().unwrap(), vec![Pin::High, Pin::Auto]);
    let bad = app
        .oneshot(whep_offer("/whep/demo?layer=ultra", "u1"))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code_of(bad).await, "bad_request");
}

#[tokio::test]
async fn the_layer_endpoint_changes_a_viewers_pin() {
    let fake = FakeSfu::default();
    let (app, _) = app(fake.clone()).await;
    let resp = app.clone().oneshot(whep("demo")).await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let post = |body: &str, ct: &str, uri: String| {
        Request::post(uri)
            .header("content-type", ct)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let layer = format!("{location}/layer");
    let ok = app
        .clone()
        .oneshot(post(
            r#"{"layer":"low"}"#,
            "application/json",
            layer.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(fake.pins.lock().unwrap().last(), Some(&Pin::Low));
    for (body, ct, status) in [
        (
            r#"{"layer":"best"}"#,
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"quality":1}"#,
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        ("low", "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let resp = app
            .clone()
            .oneshot(post(body, ct, layer.clone()))
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
    }
    let unknown = app
        .oneshot(post(
            r#"{"layer":"low"}"#,
            "application/json",
            "/whep/demo/nosuchsession/layer".into(),
        ))
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_with_new_credentials_restarts_ice_and_answers_with_the_servers() {
    let fake = FakeSfu::default();
    let (app, _) = app(fake.clone()).await;
    let resp = app
        .clone()
        .oneshot(whep_offer("/whep/demo", "first"))
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let patch = |frag: &str, if_match: Option<&str>| {
        let mut b = Request::patch(location.clone())
            .header("content-type", "application/trickle-ice-sdpfrag");
        if let Some(m) = if_match {
            b = b.header("if-match", m);
        }
        b.body(Body::from(frag.to_string())).unwrap()
    };
    // Same ufrag: a trickle, not a restart.
    let trickle = app
        .clone()
        .oneshot(patch(
            "a=ice-ufrag:first\r\na=ice-pwd:x\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(trickle.status(), StatusCode::NO_CONTENT);
    // New credentials without If-Match: 428.
    let frag = "a=ice-ufrag:second\r\na=ice-pwd:secondpassword\r\n";
    let missing = app.clone().oneshot(patch(frag, None)).await.unwrap();
    assert_eq!(missing.status(), StatusCode::PRECONDITION_REQUIRED);
    let restarted = app.clone().oneshot(patch(frag, Some("*"))).await.unwrap();
    assert_eq!(restarted.status(), StatusCode::OK);
    let new_etag = restarted.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    assert_eq!(
        restarted.headers()["content-type"],
        "application/trickle-ice-sdpfrag"
    );
    let body = axum::body::to_bytes(restarted.into_body(), 1 << 16)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains("a=ice-ufrag:srvufrag\r\n"), "{body}");
    assert!(body.contains("a=ice-pwd:srvpassword\r\n"), "{body}");
    assert!(body.contains("a=candidate:1 1 udp"), "{body}");
    assert_eq!(*fake.restarts.lock().unwrap(), vec!["second".to_string()]);
    // The old ETag no longer matches.
    let stale = app
        .oneshot(patch("a=ice-ufrag:third\r\na=ice-pwd:p\r\n", Some(&etag)))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
}
