//! `/v1/tables`: the catalog (list, get, put, delete).

use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::extract::{ApiQuery, json_body, page_limit};
use super::problem::ApiError;
use crate::api::{Problem, PutTable, TableList, TableView};
use crate::core::Service;
use crate::principals::Principal;

/// A page of a listing by name.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct NamePage {
    /// The `next` of the previous page.
    after: Option<String>,
    /// Entries per page (1 to 1000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Catalog tables with the schemas read from their files, by name, a page at a time.
#[utoipa::path(
    get, path = "/v1/tables", tag = "tables",
    params(NamePage),
    responses(
        (status = 200, description = "A page of tables", body = TableList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_tables(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    ApiQuery(page): ApiQuery<NamePage>,
) -> Result<axum::Json<TableList>, ApiError> {
    let limit = page_limit(page.limit, 100, 1000)?;
    Ok(axum::Json(
        service
            .tables(&caller, page.after.as_deref(), limit)
            .await?,
    ))
}

/// One catalog table.
#[utoipa::path(
    get, path = "/v1/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name")),
    responses(
        (status = 200, description = "The table", body = TableView),
        (status = 400, description = "Its files cannot be read", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Its URL is no longer inside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such table", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_table(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(name): Path<String>,
) -> Result<axum::Json<TableView>, ApiError> {
    Ok(axum::Json(service.table(&caller, &name).await?))
}

/// Add or replace a catalog table; its files must be readable (the schema is
/// read from them before the table is stored, and shown as read until the
/// table is put again).
#[utoipa::path(
    put, path = "/v1/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name: letters, digits and _")),
    request_body = PutTable,
    responses(
        (status = 200, description = "Stored", body = TableView, links(
            ("GetTable" = (operation_id = "get_table", parameters(("name" = "$response.body#/name")))),
            ("DeleteTable" = (operation_id = "delete_table", parameters(("name" = "$response.body#/name")))),
        )),
        (status = 400, description = "Bad name, URL, format or body; unreadable files; too many files", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The URL is outside the prefixes the server allows", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn put_table(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(name): Path<String>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<axum::Json<TableView>, ApiError> {
    let put: PutTable = json_body(body, "a table")?;
    Ok(axum::Json(service.put_table(&caller, name, put).await?))
}

/// Remove a catalog table (its files stay).
#[utoipa::path(
    delete, path = "/v1/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such table", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn delete_table(
    State(service): State<Arc<Service>>,
    Extension(caller): Extension<Arc<Principal>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    service.delete_table(&caller, &name)?;
    Ok(StatusCode::NO_CONTENT)
}
