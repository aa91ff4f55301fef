//! The OpenAPI document at `GET /api/openapi.json`, checked against the live router on a real
//! database: every documented operation is routed with exactly its methods, every endpoint of
//! the README's API table is documented (and the other way round), every error answer is the
//! `ErrorBody` schema, the security annotations match who gets a 401, and the schemas of key
//! bodies have exactly the fields the handlers return.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::Api;
use serde_json::{json, Value};
use storage::testing::TestDb;
use storage::Store;
use tower::ServiceExt;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

async fn document(api: &Api) -> Value {
    let req = Request::get("/api/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/json",
        "content type"
    );
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

/// Every `(METHOD, path)` the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// `{name}` and the like replaced by a value no row has.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("nosuch");
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The endpoints of the API table in README.md: rows like
/// ``| PUT / DELETE | `/api/channels/{name}/follow` | ... |``.
fn readme_endpoints() -> BTreeSet<(String, String)> {
    let readme = include_str!("../../README.md");
    let mut out = BTreeSet::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[2].starts_with("`/api/") {
            continue;
        }
        let paths: Vec<&str> = cells[2]
            .split('`')
            .filter(|p| p.starts_with("/api/"))
            .collect();
        for method in cells[1].split('/') {
            let method = method.trim().trim_end_matches("(WebSocket)").trim();
            for path in &paths {
                out.insert((method.to_string(), path.to_string()));
            }
        }
    }
    out
}

/// The document with `$ref`s to `#/components/schemas/...` followed.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let s = &doc["components"]["schemas"][name];
            assert!(s.is_object(), "dangling $ref {r}");
            resolve(doc, s)
        }
        None => v,
    }
}

/// Property names of the JSON body schema of a response.
fn response_fields(doc: &Value, method: &str, path: &str, status: u16) -> BTreeSet<String> {
    let op = &doc["paths"][path][method.to_lowercase()];
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status}: no JSON schema"
    );
    fields(doc, schema)
}

fn fields(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties in {schema}"))
        .keys()
        .cloned()
        .collect()
}

/// The schema of the items of array property `field` of a response body.
fn item_fields(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    field: &str,
) -> BTreeSet<String> {
    let op = &doc["paths"][path][method.to_lowercase()];
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    let list = resolve(doc, &resolve(doc, schema)["properties"][field]);
    fields(doc, &list["items"])
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

async fn every_documented_route_is_routed_and_every_route_documented(store: Store, _db: &TestDb) {
    let api = Api::new(store);
    let doc = document(&api).await;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "AeThex LIVE platform API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let ops = operations(&doc);
    let mut ids = BTreeSet::new();
    for (method, path) in &ops {
        let id = doc["paths"][path][method.to_lowercase()]["operationId"].as_str();
        let id = id.unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(
            ids.insert(id),
            "{method} {path}: operationId {id} is used twice"
        );
    }
    for known in [
        ("POST", "/api/sessions"),
        ("GET", "/api/channels/{name}"),
        ("PATCH", "/api/channels/{name}"),
        ("GET", "/api/channels/{name}/chat"),
        ("PUT", "/api/channels/{name}/bans/{user}"),
        ("DELETE", "/api/keys/{id}"),
        ("GET", "/api/openapi.json"),
    ] {
        let known = (known.0.to_string(), known.1.to_string());
        assert!(ops.contains(&known), "{known:?} is not documented");
    }

    // The README's table and the document list the same endpoints.
    let readme = readme_endpoints();
    assert!(readme.len() > 20, "README table not found: {readme:?}");
    let undocumented: Vec<_> = readme.difference(&ops).collect();
    assert!(
        undocumented.is_empty(),
        "in README, not in the document: {undocumented:?}"
    );
    let unlisted: Vec<_> = ops.difference(&readme).collect();
    assert!(
        unlisted.is_empty(),
        "in the document, not in README: {unlisted:?}"
    );

    // Each documented method reaches a handler (the router's own 404 has no body; a handler's
    // has a JSON error), and each method not documented on a documented path is a 405.
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for path in paths {
        let uri = concrete(path);
        for m in METHODS {
            let method = m.to_uppercase();
            let documented = ops.contains(&(method.clone(), path.clone()));
            let req = Request::builder()
                .method(method.as_str())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let (s, v) = api.raw(req).await;
            if documented {
                assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
                if s == StatusCode::NOT_FOUND {
                    assert!(v["code"].is_string(), "{method} {uri}: the router's 404");
                }
            } else {
                assert_eq!(
                    s,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}: not documented"
                );
            }
        }
    }
}

async fn every_error_is_the_error_schema_and_security_matches_401s(store: Store, _db: &TestDb) {
    let api = Api::new(store);
    let doc = document(&api).await;
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        fields(&doc, error),
        BTreeSet::from(["code".into(), "error".into()])
    );
    let mut required: Vec<_> = error["required"].as_array().unwrap().iter().collect();
    required.sort_by_key(|v| v.to_string());
    assert_eq!(required, [&json!("code"), &json!("error")]);
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "X-Api-Key");

    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        let mut errors = 0;
        for (status, r) in responses {
            let code: u16 = status.parse().expect("numeric status");
            if code < 400 {
                continue;
            }
            errors += 1;
            let schema = &r["content"]["application/json"]["schema"];
            assert_eq!(
                schema["$ref"], "#/components/schemas/ErrorBody",
                "{method} {path} {status}: {r}"
            );
        }
        assert!(
            errors >= 3,
            "{method} {path}: too few error answers documented"
        );
        assert!(responses.contains_key("429"), "{method} {path}: no 429");

        // Security: every named scheme exists; an operation that always needs a session
        // answers 401 without one, and one that does not, does not.
        let alternatives = op["security"]
            .as_array()
            .expect("security on every operation");
        for alt in alternatives {
            for name in alt.as_object().unwrap().keys() {
                assert!(
                    schemes.contains_key(name),
                    "{method} {path}: unknown scheme {name}"
                );
            }
        }
        let needs_session = alternatives.iter().all(|a| a.get("bearer").is_some());
        let req = Request::builder()
            .method(method.as_str())
            .uri(concrete(&path))
            .body(Body::empty())
            .unwrap();
        let (s, v) = api.raw(req).await;
        if needs_session {
            assert_eq!(
                (s, v["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("unauthorized")),
                "{method} {path}"
            );
            assert!(responses.contains_key("401"), "{method} {path}");
        } else {
            assert_ne!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
        }
        // Whatever it was, an error is the documented shape.
        if s.is_client_error() || s.is_server_error() {
            assert!(
                v["code"].is_string() && v["error"].is_string(),
                "{method} {path}: {v}"
            );
        }
    }
}

async fn schemas_have_the_fields_the_handlers_return(store: Store, _db: &TestDb) {
    let api = Api::new(store);
    let doc = document(&api).await;

    let (s, session) = api
        .call(
            "POST",
            "/api/users",
            None,
            Some(json!({"name": "alpha", "password": "correct horse"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        keys(&session),
        response_fields(&doc, "POST", "/api/users", 201)
    );
    let token = session["token"].as_str().unwrap().to_string();

    let (s, created) = api
        .call(
            "POST",
            "/api/channels",
            Some(&token),
            Some(json!({"name": "alpha"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        keys(&created),
        response_fields(&doc, "POST", "/api/channels", 201)
    );

    let (s, channel) = api.call("GET", "/api/channels/alpha", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        keys(&channel),
        response_fields(&doc, "GET", "/api/channels/{name}", 200)
    );
    let (s, patched) = api
        .call(
            "PATCH",
            "/api/channels/alpha",
            Some(&token),
            Some(json!({"title": "t"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        keys(&patched),
        response_fields(&doc, "PATCH", "/api/channels/{name}", 200)
    );

    // alpha is live (the fake media side says so): a page of channels.
    let (s, live) = api.call("GET", "/api/live", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys(&live), response_fields(&doc, "GET", "/api/live", 200));
    assert_eq!(
        keys(&live["items"][0]),
        item_fields(&doc, "GET", "/api/live", 200, "items")
    );

    let (s, me) = api.call("GET", "/api/me", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys(&me), response_fields(&doc, "GET", "/api/me", 200));

    let (s, _) = api
        .call("PUT", "/api/channels/alpha/follow", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, followers) = api
        .call("GET", "/api/channels/alpha/followers", None, None)
        .await;
    let path = "/api/channels/{name}/followers";
    assert_eq!(keys(&followers), response_fields(&doc, "GET", path, 200));
    assert_eq!(
        keys(&followers["items"][0]),
        item_fields(&doc, "GET", path, 200, "items")
    );
    let (_, following) = api
        .call("GET", "/api/users/alpha/following", None, None)
        .await;
    let path = "/api/users/{name}/following";
    assert_eq!(
        keys(&following["items"][0]),
        item_fields(&doc, "GET", path, 200, "items")
    );

    let (s, key) = api.call("POST", "/api/keys", Some(&token), None).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(keys(&key), response_fields(&doc, "POST", "/api/keys", 201));
    let (_, list) = api.call("GET", "/api/keys", Some(&token), None).await;
    assert_eq!(
        keys(&list["items"][0]),
        item_fields(&doc, "GET", "/api/keys", 200, "items")
    );

    let (s, hook) = api
        .call(
            "POST",
            "/api/channels/alpha/webhooks",
            Some(&token),
            Some(json!({"url": "https://hooks.example.com/in", "events": ["follow"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let path = "/api/channels/{name}/webhooks";
    assert_eq!(keys(&hook), response_fields(&doc, "POST", path, 201));

    let (s, report) = api
        .call("GET", "/api/channels/alpha/analytics", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let path = "/api/channels/{name}/analytics";
    assert_eq!(keys(&report), response_fields(&doc, "GET", path, 200));

    // An error body is what ErrorBody says.
    let (s, err) = api.call("GET", "/api/channels/nosuch", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        keys(&err),
        fields(&doc, &doc["components"]["schemas"]["ErrorBody"])
    );
}

storage::on_both_databases!(
    migrate = platform::migrate;
    every_documented_route_is_routed_and_every_route_documented,
    every_error_is_the_error_schema_and_security_matches_401s,
    schemas_have_the_fields_the_handlers_return,
);
