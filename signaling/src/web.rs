//! The browser client: static files embedded in the binary.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::error::ApiError;

const WATCH_HTML: &str = include_str!("../../web-client/watch.html");
const LIVE_HTML: &str = include_str!("../../web-client/live.html");
const PLAYER_JS: &str = include_str!("../../web-client/player.js");
const LIVE_JS: &str = include_str!("../../web-client/live.js");
const STYLE_CSS: &str = include_str!("../../web-client/style.css");
const COMMON_JS: &str = include_str!("../../web-client/common.js");
const STAGE_HTML: &str = include_str!("../../web-client/stage.html");
const STAGE_JS: &str = include_str!("../../web-client/stage.js");

/// `GET /watch/{channel}`: the WHEP player (it reads the channel from its URL).
pub async fn watch(Path(_channel): Path<String>) -> Html<&'static str> {
    Html(WATCH_HTML)
}

/// `GET /stage/{channel}?invite=…`: the co-stream page (camera and microphone onto the
/// stage, the others in a grid); it reads the channel and the invite from its URL.
pub async fn stage(Path(_channel): Path<String>) -> Html<&'static str> {
    Html(STAGE_HTML)
}

/// `GET /live`: the go-live page (WHIP from camera or screen).
pub async fn live() -> Html<&'static str> {
    Html(LIVE_HTML)
}

/// `GET /`: to the go-live page.
pub async fn index() -> Redirect {
    Redirect::to("/live")
}

/// `GET /static/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "player.js" => (PLAYER_JS, "text/javascript; charset=utf-8"),
        "live.js" => (LIVE_JS, "text/javascript; charset=utf-8"),
        "stage.js" => (STAGE_JS, "text/javascript; charset=utf-8"),
        "common.js" => (COMMON_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::NotFound(format!("no such file: {file}")).into_response(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
