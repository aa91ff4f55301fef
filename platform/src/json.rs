//! A JSON body extractor whose every rejection is the API's JSON error: 415 without
//! `Content-Type: application/json`, 413 over the size limit, 400 for malformed JSON or wrong
//! types (with serde's message), never axum's plain-text rejections. The same for query
//! strings: 400 with serde's message.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use http_common::ApiError;

/// `Json<T>` with API errors.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
            }),
            Err(JsonRejection::BytesRejection(_)) => Err(ApiError::TooLarge { limit: MAX_BODY }),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// `Query<T>` with API errors.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The body limit of the API's routes (set with `DefaultBodyLimit` by the router's caller).
pub const MAX_BODY: usize = 64 * 1024;
