//! Stage guests at the HTTP layer, against a fake media engine and a real (SQLite) store: an
//! invite token on `/whip/{channel}` publishes into the guest's own stream, never the host's;
//! bad, foreign, revoked and surplus invites are refused with JSON errors; a revoked guest is
//! ended by the invite check.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cluster::TokenKey;
use common::FakeSfu;
use sfu::{PeerId, StreamId};
use signaling::stage::{end_uninvited, MAX_GUESTS};
use signaling::{router, AppState, Cluster, HttpSettings, Metrics, Sessions, Store};
use tower::ServiceExt;

/// A publish offer (WHIP sends).
const OFFER: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";

/// The state over `fake` with the channels `duo` and `other`, and `duo`'s stream key.
async fn state_with_key(fake: FakeSfu) -> (AppState<FakeSfu>, String) {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let key = store.create_channel("duo").await.unwrap();
    store.create_channel("other").await.unwrap();
    let st = AppState {
        sfu: fake,
        store,
        sessions: Arc::new(Sessions::default()),
        settings: Arc::new(HttpSettings::default()),
        metrics: Arc::new(Metrics::new()),
        upstream: None,
        cluster: Arc::new(Cluster::new(
            "origin".into(),
            String::new(),
            TokenKey::new(common::SECRET),
        )),
        admission: Arc::default(),
        stages: Arc::default(),
    };
    (st, key.expose().to_string())
}

async fn state(fake: FakeSfu) -> AppState<FakeSfu> {
    state_with_key(fake).await.0
}

async fn invite(st: &AppState<FakeSfu>, channel: &str, name: &str) -> (String, String) {
    let new = st
        .store
        .create_invite(channel, name, 3600)
        .await
        .unwrap()
        .unwrap();
    (new.invite.id, new.token.expose().to_string())
}

fn whip(channel: &str, token: &str) -> Request<Body> {
    Request::post(format!("/whip/{channel}"))
        .header("content-type", "application/sdp")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(OFFER))
        .unwrap()
}

async fn json_of(resp: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_guest_publishes_into_its_own_stream_and_the_host_keeps_the_channel() {
    let fake = FakeSfu::default();
    let (st, key) = state_with_key(fake.clone()).await;
    let (id, token) = invite(&st, "duo", "Ann").await;
    let app = router(st.clone());

    let host = app.clone().oneshot(whip("duo", &key)).await.unwrap();
    assert_eq!(host.status(), StatusCode::CREATED);
    let guest = app.clone().oneshot(whip("duo", &token)).await.unwrap();
    assert_eq!(guest.status(), StatusCode::CREATED);
    assert!(guest.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/whip/duo/"));
    let duo = StreamId::new("duo").unwrap();
    assert_eq!(
        *fake.published.lock().unwrap(),
        vec![duo.clone(), StreamId::guest(&duo, &id)],
        "the guest's stream is its own: the host's is never published over"
    );
    assert_eq!(st.sessions.publisher_of("duo"), Some(PeerId(100)));
    assert_eq!(
        st.sessions.guest_of_peer(PeerId(101)),
        Some(("duo".to_string(), id.clone(), "Ann".to_string()))
    );
    assert_eq!(st.sessions.len(), 2);
}

#[tokio::test]
async fn unknown_foreign_and_revoked_invites_are_refused_with_401() {
    let st = state(FakeSfu::default()).await;
    let (_, foreign) = invite(&st, "other", "Bo").await;
    let (id, revoked) = invite(&st, "duo", "Cy").await;
    assert!(st.store.revoke_invite("duo", &id).await.unwrap());
    let app = router(st.clone());
    for token in ["si_0000", foreign.as_str(), revoked.as_str()] {
        let resp = app.clone().oneshot(whip("duo", token)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token}");
        let body = json_of(resp).await;
        assert_eq!(body["code"], "unauthorized");
        assert!(
            body["error"].as_str().unwrap().contains("stage invite"),
            "{body}"
        );
    }
    assert!(st.sessions.is_empty(), "a refusal leaves no resource");
}

#[tokio::test]
async fn a_full_stage_refuses_a_sixth_guest_with_409_but_a_guest_may_reconnect() {
    let fake = FakeSfu::default();
    let st = state(fake.clone()).await;
    let app = router(st.clone());
    let mut tokens = Vec::new();
    for i in 0..MAX_GUESTS {
        let (_, token) = invite(&st, "duo", &format!("g{i}")).await;
        let resp = app.clone().oneshot(whip("duo", &token)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "guest {i}");
        tokens.push(token);
    }
    let (_, sixth) = invite(&st, "duo", "late").await;
    let resp = app.clone().oneshot(whip("duo", &sixth)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "conflict");
    assert!(body["error"].as_str().unwrap().contains("full"), "{body}");
    // A guest already on the stage publishing again (a reconnect) is not a new one.
    let again = app.clone().oneshot(whip("duo", &tokens[0])).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(fake.published.lock().unwrap().len(), MAX_GUESTS + 1);
}

#[tokio::test]
async fn revoking_an_invite_ends_its_guest_and_no_one_else() {
    let fake = FakeSfu::default();
    let st = state(fake.clone()).await;
    let (ann, ann_token) = invite(&st, "duo", "Ann").await;
    let (_, bo_token) = invite(&st, "duo", "Bo").await;
    let app = router(st.clone());
    for token in [&ann_token, &bo_token] {
        let resp = app.clone().oneshot(whip("duo", token)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    assert!(
        end_uninvited(&st).await.is_empty(),
        "valid invites end no one"
    );
    assert!(st.store.revoke_invite("duo", &ann).await.unwrap());
    let ended = end_uninvited(&st).await;
    assert_eq!(ended, vec![("duo".to_string(), ann)]);
    assert_eq!(*fake.closed.lock().unwrap(), vec![PeerId(100)]);
    assert_eq!(st.sessions.len(), 1, "Bo stays on the stage");
}

/// A WHEP request on `channel` with `video` recvonly video sections and this bearer token.
fn whep(channel: &str, token: Option<&str>, video: usize) -> Request<Body> {
    let mut offer = String::from("v=0\r\n");
    for _ in 0..video {
        offer.push_str("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n");
    }
    let mut req =
        Request::post(format!("/whep/{channel}")).header("content-type", "application/sdp");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.body(Body::from(offer)).unwrap()
}

/// The host of `duo` and guests Ann and Bob publishing; their invite ids and tokens.
async fn full_stage(
    app: &axum::Router,
    st: &AppState<FakeSfu>,
    key: &str,
) -> Vec<(String, String)> {
    let resp = app.clone().oneshot(whip("duo", key)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let mut guests = Vec::new();
    for name in ["Ann", "Bob"] {
        let (id, token) = invite(st, "duo", name).await;
        let resp = app.clone().oneshot(whip("duo", &token)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        guests.push((id, token));
    }
    guests
}

/// A WHEP session on `duo` with this token and `video` video sections, which must be created.
async fn watching(app: &axum::Router, token: Option<&str>, video: usize) {
    let resp = app
        .clone()
        .oneshot(whep("duo", token, video))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

fn names(streams: &[StreamId]) -> Vec<String> {
    streams.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_guest_watching_with_its_invite_gets_the_host_and_the_other_guests_never_itself() {
    let fake = FakeSfu::default();
    let (st, key) = state_with_key(fake.clone()).await;
    let app = router(st.clone());
    let guests = full_stage(&app, &st, &key).await;

    watching(&app, Some(&guests[0].1), 3).await;
    let watched = fake.subscribed.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        names(&watched),
        vec!["duo".to_string(), format!("duo~{}", guests[1].0)]
    );
    // Watching the others is not being audience.
    assert_eq!(st.sessions.viewer(PeerId(8)), None);
    // It does not take a guest's place on the stage either: a third guest still fits.
    let (_, third) = invite(&st, "duo", "Cy").await;
    let resp = app.clone().oneshot(whip("duo", &third)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_host_watching_with_its_stream_key_gets_its_guests() {
    let fake = FakeSfu::default();
    let (st, key) = state_with_key(fake.clone()).await;
    let app = router(st.clone());
    let resp = app
        .clone()
        .oneshot(whep("duo", Some(&key), 2))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "no guest yet: nothing to watch"
    );
    assert!(json_of(resp).await["error"]
        .as_str()
        .unwrap()
        .contains("no guest"));
    let guests = full_stage(&app, &st, &key).await;

    watching(&app, Some(&key), 2).await;
    let watched = fake.subscribed.lock().unwrap().last().cloned().unwrap();
    let mut expected: Vec<String> = guests.iter().map(|(id, _)| format!("duo~{id}")).collect();
    expected.sort();
    assert_eq!(names(&watched), expected);
    let resp = app
        .clone()
        .oneshot(whep("duo", Some("sk_wrong"), 2))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_viewer_gets_the_guests_only_with_more_than_one_video_section() {
    let fake = FakeSfu::default();
    let (st, key) = state_with_key(fake.clone()).await;
    let app = router(st.clone());
    let guests = full_stage(&app, &st, &key).await;

    let resp = app.clone().oneshot(whep("duo", None, 1)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        names(&fake.subscribed.lock().unwrap().last().cloned().unwrap()),
        vec!["duo"]
    );
    let resp = app.clone().oneshot(whep("duo", None, 3)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let watched = fake.subscribed.lock().unwrap().last().cloned().unwrap();
    assert_eq!(watched.len(), 3);
    assert_eq!(watched[0].as_str(), "duo", "the host first");
    // A viewer is audience.
    assert!(st.sessions.viewer(PeerId(8)).is_some());
    // Another channel's invite does not make a participant.
    let (_, foreign) = invite(&st, "other", "Zed").await;
    let resp = app
        .clone()
        .oneshot(whep("duo", Some(&foreign), 1))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        watched[1].to_string(),
        format!("duo~{}", guests[0].0.clone().min(guests[1].0.clone()))
    );
}

#[tokio::test]
async fn revoking_an_invite_also_ends_the_guests_watching_session() {
    let fake = FakeSfu::default();
    let (st, key) = state_with_key(fake.clone()).await;
    let app = router(st.clone());
    let guests = full_stage(&app, &st, &key).await;
    watching(&app, Some(&guests[0].1), 2).await;
    st.store.revoke_invite("duo", &guests[0].0).await.unwrap();

    end_uninvited(&st).await;
    let closed = fake.closed.lock().unwrap().clone();
    assert!(
        closed.contains(&PeerId(8)),
        "its WHEP session is closed: {closed:?}"
    );
    assert!(
        closed.contains(&PeerId(101)),
        "its publish is closed: {closed:?}"
    );
    assert!(!closed.contains(&PeerId(100)), "the host stays: {closed:?}");
}

#[tokio::test]
async fn a_stream_going_live_is_shown_to_every_watching_session_but_its_own_participant() {
    let fake = FakeSfu::default();
    let (st, key) = state_with_key(fake.clone()).await;
    let app = router(st.clone());
    let guests = full_stage(&app, &st, &key).await;
    // Ann (8), the host (1008) and a three-section viewer (2008) watch.
    for token in [Some(guests[0].1.as_str()), Some(key.as_str()), None] {
        let resp = app.clone().oneshot(whep("duo", token, 3)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    // A one-section viewer (3008) has no section to spare: it is not asked.
    watching(&app, None, 1).await;
    let (ann, host, viewer) = (PeerId(8), PeerId(1008), PeerId(2008));

    let ann_stream = StreamId::guest(&StreamId::new("duo").unwrap(), &guests[0].0);
    let shown = signaling::stage::show_arrival(&st.sessions, &st.sfu, &ann_stream).await;
    assert_eq!(
        sorted(shown),
        vec![host, viewer],
        "Ann's stream: not to Ann"
    );
    let host_stream = StreamId::new("duo").unwrap();
    let shown = signaling::stage::show_arrival(&st.sessions, &st.sfu, &host_stream).await;
    assert_eq!(
        sorted(shown),
        vec![ann, viewer],
        "the host's stream: not to the host"
    );
    let bound = fake.bound.lock().unwrap().clone();
    assert_eq!(
        bound.len(),
        4,
        "the one-section viewer is never asked: {bound:?}"
    );
}

fn sorted(mut v: Vec<PeerId>) -> Vec<PeerId> {
    v.sort();
    v
}

#[tokio::test]
async fn a_watching_session_learns_which_section_shows_whom_as_a_snapshot_and_as_events() {
    use futures_util::StreamExt;
    let fake = FakeSfu::default();
    let (st, key) = state_with_key(fake.clone()).await;
    let app = router(st.clone());
    let guests = full_stage(&app, &st, &key).await;
    let resp = app
        .clone()
        .oneshot(whep("duo", Some(&guests[0].1), 3))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let bob = &guests[1].0;
    // The stage's driver says the host speaks and Bob is featured.
    let bob_stream = StreamId::guest(&StreamId::new("duo").unwrap(), bob);
    let host = StreamId::new("duo").unwrap();
    st.stages.set("duo", Some(bob_stream), vec![host]);
    let want = serde_json::json!({"sections": [
        {"video_mid": "0", "audio_mid": "1", "role": "host", "id": null, "name": "duo",
         "speaking": true, "featured": false},
        {"video_mid": "2", "audio_mid": "3", "role": "guest", "id": bob, "name": "Bob",
         "speaking": false, "featured": true},
    ]});

    let get = |path: String| Request::get(path).body(Body::empty()).unwrap();
    let resp = app
        .clone()
        .oneshot(get(format!("{location}/stage")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await, want);

    let resp = app
        .clone()
        .oneshot(get(format!("{location}/stage/events")))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("the first event comes at once")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(first.to_vec()).unwrap();
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data line: {text}"));
    assert!(text.starts_with("event: stage"), "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(data).unwrap(),
        want
    );

    // Another session's token, or none, is a 404 like any unknown resource.
    let resp = app
        .clone()
        .oneshot(get("/whep/duo/nope/stage".into()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
