//! Errors as the API answers them: `application/problem+json` (RFC 9457) with
//! a title that names the kind of problem and a detail that names the input.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::api::Problem;
use crate::error::SquallError;

/// An error answer: `application/problem+json` naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    title: &'static str,
    detail: String,
    /// Sent as `Retry-After` (429).
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, title: &'static str, detail: String) -> Self {
        Self {
            status,
            title,
            detail,
            retry_after: None,
        }
    }

    /// Tells the client when to try again.
    pub(crate) fn retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub(crate) fn unknown_job(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown job",
            format!("no job '{id}'"),
        )
    }

    pub(crate) fn unknown_table(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown table",
            format!("no catalog table '{name}'"),
        )
    }

    pub(crate) fn internal(detail: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", detail)
    }
}

impl From<SquallError> for ApiError {
    fn from(error: SquallError) -> Self {
        let (status, title) = match &error {
            SquallError::Sql { .. } => (StatusCode::BAD_REQUEST, "bad SQL"),
            // Parsed, but cannot be planned: unknown tables or columns, types.
            SquallError::Plan { .. } => (StatusCode::BAD_REQUEST, "bad query"),
            SquallError::Rejected { .. } => (StatusCode::BAD_REQUEST, "rejected statement"),
            SquallError::Table { .. } => (StatusCode::BAD_REQUEST, "bad table"),
            SquallError::ScanLimit { .. } => (StatusCode::BAD_REQUEST, "scan limit exceeded"),
            SquallError::OverLimit { .. } => (StatusCode::BAD_REQUEST, "over a limit"),
            SquallError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            SquallError::OutputClaimed { .. } | SquallError::OutputExists { .. } => {
                (StatusCode::CONFLICT, "output in use")
            }
            e if e.is_user_error() => (StatusCode::BAD_REQUEST, "invalid job"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        Self::new(status, title, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: "about:blank".into(),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        response
    }
}
