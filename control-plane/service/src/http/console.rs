//! The web console (`GET /`): one HTML page, its script and its stylesheet,
//! built into the binary. They hold no data and need no token; the page asks
//! for one and reads everything through `/v1` with it, like any client. The
//! content security policy lets the page load only its own files and talk
//! only to this server.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;

const INDEX: &str = include_str!("console/index.html");
const APP: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' blob: data:; form-action 'none'; \
                   frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`.
pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /console/{file}`: the page's script and stylesheet.
pub(super) async fn file(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => asset(APP, "text/javascript; charset=utf-8"),
        "style.css" => asset(STYLE, "text/css; charset=utf-8"),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            format!("the console has no file '{file}'"),
        )
        .into_response(),
    }
}
