//! Errors as the API answers them: `application/problem+json` (RFC 9457) with
//! a title that names the kind of problem and a detail that names the input.
//! The one place that says which status each of the service's errors is.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::Problem;
use crate::errors::ServiceError;
use crate::store::StoreError;
use squall_engine::error::SquallError;

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

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn internal(detail: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", detail)
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let (status, title) = match &error {
            ServiceError::Engine(e) => return engine_error(e, error.to_string()),
            ServiceError::UnknownJob { .. } => (StatusCode::NOT_FOUND, "unknown job"),
            ServiceError::UnknownResultFile { .. } => {
                (StatusCode::NOT_FOUND, "unknown result file")
            }
            ServiceError::UnknownTable { .. } => (StatusCode::NOT_FOUND, "unknown table"),
            ServiceError::UnknownSchedule { .. } => (StatusCode::NOT_FOUND, "unknown schedule"),
            ServiceError::AlreadyFinished { .. } => (StatusCode::CONFLICT, "job already finished"),
            ServiceError::NoResult { .. } => (StatusCode::CONFLICT, "no result"),
            ServiceError::RowTooLarge { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "row too large"),
            ServiceError::ScheduleBusy { .. } => (StatusCode::CONFLICT, "schedule busy"),
            ServiceError::BadCron { .. } => (StatusCode::BAD_REQUEST, "bad cron"),
            ServiceError::TooMany { .. } => (StatusCode::CONFLICT, "too many"),
            ServiceError::TokenReused { .. } => (StatusCode::CONFLICT, "token reused"),
            ServiceError::NotOwner { .. } => (StatusCode::FORBIDDEN, "not yours"),
            ServiceError::UnknownPrincipal { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "unknown principal")
            }
            ServiceError::QueueFull { retry_after, .. }
            | ServiceError::PrincipalQueueFull { retry_after, .. } => {
                let mut answer = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "queue full",
                    error.to_string(),
                );
                answer.retry_after = Some(*retry_after);
                return answer;
            }
            ServiceError::Store(_)
            | ServiceError::ResultMissing { .. }
            | ServiceError::ResultUnreadable { .. }
            | ServiceError::Corrupt { .. }
            | ServiceError::Encode { .. }
            | ServiceError::Metrics { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        Self::new(status, title, error.to_string())
    }
}

/// The status and title of an engine error, with `detail` as the text.
fn engine_error(error: &SquallError, detail: String) -> ApiError {
    let (status, title) = match error {
        SquallError::Sql { .. } => (StatusCode::BAD_REQUEST, "bad SQL"),
        // Parsed, but cannot be planned: unknown tables or columns, types.
        SquallError::Plan { .. } => (StatusCode::BAD_REQUEST, "bad query"),
        SquallError::Rejected { .. } => (StatusCode::BAD_REQUEST, "rejected statement"),
        SquallError::Table { .. } => (StatusCode::BAD_REQUEST, "bad table"),
        SquallError::ScanLimit { .. } => (StatusCode::BAD_REQUEST, "scan limit exceeded"),
        SquallError::OverLimit { .. }
        | SquallError::PlanningTimedOut { .. }
        | SquallError::PlanUndecodable { .. } => (StatusCode::BAD_REQUEST, "over a limit"),
        SquallError::PlanningBusy { .. } => {
            let mut answer =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "planning busy", detail);
            answer.retry_after = Some(std::time::Duration::from_secs(5));
            return answer;
        }
        SquallError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        SquallError::OutputClaimed { .. } | SquallError::OutputExists { .. } => {
            (StatusCode::CONFLICT, "output in use")
        }
        SquallError::OutputNotEmpty { .. } => (StatusCode::CONFLICT, "output not empty"),
        e if e.is_user_error() => (StatusCode::BAD_REQUEST, "invalid job"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    ApiError::new(status, title, detail)
}

impl From<SquallError> for ApiError {
    fn from(error: SquallError) -> Self {
        ServiceError::from(error).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ServiceError::from(error).into()
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
