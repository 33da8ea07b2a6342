//! Arrow Flight SQL: the clients of SQL engines (ADBC, JDBC, BI tools,
//! notebooks) reach Squall here (`squall serve --flight-listen ADDR`).
//!
//! A statement is a job like one sent to `POST /v1/jobs`: the same token and
//! principal (`Authorization: Bearer TOKEN` on every call, or a handshake
//! with HTTP basic credentials whose password is the token), the same
//! limits, queue and confinement. Its tables are the catalog's, or named by
//! a quoted URL in `FROM` (checked as the API checks a job's URLs).
//! `GetFlightInfo` waits for the job to end and answers with the result's
//! schema and one endpoint; `DoGet` streams the result files' record
//! batches in order. A client that gives up on `GetFlightInfo` (a cancel,
//! a timeout, a dropped connection) cancels the job. Catalog tables are
//! listed by `GetCatalogs` (one, `squall`), `GetDbSchemas` (one, `public`)
//! and `GetTables`, with their schemas.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::Schema;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTables,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use base64::Engine as _;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::api::{JobState, SubmitJob, TableRef};
use crate::core::Service;
use crate::errors::ServiceError;
use crate::http::problem_status;
use crate::principals::Principal;
use crate::results::schema_of;
use squall_engine::planner::statements::{referenced_tables, url_tables};

/// The catalog and schema Squall's tables are listed under.
pub const CATALOG: &str = "squall";
pub const SCHEMA: &str = "public";
/// Catalog tables a `GetTables` lists at most.
const MAX_LISTED_TABLES: usize = 10_000;

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Squall");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder
        .build()
        .unwrap_or_else(|e| panic!("the SQL info of a Flight SQL server builds: {e}"))
});

/// Requests one connection has in flight at once.
const CALLS_PER_CONNECTION: usize = 32;

/// The Flight SQL service of `service`, for a tonic server.
pub fn flight_service(service: Arc<Service>) -> FlightServiceServer<FlightSql> {
    FlightServiceServer::new(FlightSql { service })
}

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub async fn serve_flight(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
        .add_service(flight_service(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

pub struct FlightSql {
    service: Arc<Service>,
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// A service error as a gRPC status, by the HTTP status the API gives it.
fn status(error: ServiceError) -> Status {
    let message = error.to_string();
    status_of(problem_status(error), message)
}

/// The gRPC status of an error the HTTP API answers with `code`.
fn status_of(code: u16, message: String) -> Status {
    match code {
        400 | 422 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 => Status::failed_precondition(message),
        413 => Status::out_of_range(message),
        429 => Status::resource_exhausted(message),
        _ => Status::internal(message),
    }
}

impl FlightSql {
    /// The principal of the call's bearer token.
    fn caller<T>(&self, request: &Request<T>) -> Result<Arc<Principal>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        token.and_then(|t| self.service.caller(t)).ok_or_else(|| {
            Status::unauthenticated("send a valid API token as `authorization: Bearer TOKEN`")
        })
    }

    /// The job of `sql` as the API would take it: tables from the catalog,
    /// or by quoted URL.
    fn job(&self, sql: &str) -> Result<SubmitJob, Status> {
        let (sql, by_url) =
            url_tables(sql, &[]).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut tables: Vec<TableRef> = by_url
            .into_iter()
            .map(|t| TableRef {
                name: t.name,
                url: Some(t.url),
                format: None,
                partitions: None,
                csv: None,
            })
            .collect();
        let named = referenced_tables(&sql).map_err(|e| Status::invalid_argument(e.to_string()))?;
        for name in named {
            if tables.iter().any(|t| t.name.eq_ignore_ascii_case(&name)) {
                continue;
            }
            let known = self
                .service
                .store
                .table(&name)
                .map_err(|e| status(e.into()))?;
            if known.is_some() {
                tables.push(TableRef {
                    name,
                    url: None,
                    format: None,
                    partitions: None,
                    csv: None,
                });
            }
        }
        Ok(SubmitJob {
            sql,
            tables,
            output: None,
            options: Default::default(),
            labels: Default::default(),
            client_request_token: None,
            wait_timeout: None,
        })
    }

    /// Waits for job `id` to end; a caller that stops waiting (the future
    /// dropped: a cancel, a timeout, a lost connection) cancels it.
    async fn wait(&self, caller: &Arc<Principal>, id: &str) -> Result<JobState, Status> {
        struct CancelUnlessDone {
            service: Arc<Service>,
            caller: Arc<Principal>,
            id: String,
            done: bool,
        }
        impl Drop for CancelUnlessDone {
            fn drop(&mut self) {
                if self.done {
                    return;
                }
                tracing::info!(
                    job = self.id,
                    "the Flight SQL client stopped waiting: cancelling"
                );
                let (service, caller, id) =
                    (self.service.clone(), self.caller.clone(), self.id.clone());
                tokio::spawn(async move {
                    let _ = service.cancel(&caller, &id).await;
                });
            }
        }
        let mut guard = CancelUnlessDone {
            service: self.service.clone(),
            caller: caller.clone(),
            id: id.to_string(),
            done: false,
        };
        let job = self
            .service
            .final_job(caller, id, None)
            .await
            .map_err(status)?;
        guard.done = true;
        let job = job.ok_or_else(|| Status::internal(format!("job {id} never ended")))?;
        if job.state == JobState::Succeeded {
            return Ok(job.state);
        }
        let error = job.error.unwrap_or_else(|| job.state.as_str().to_string());
        Err(Status::aborted(format!("job {id}: {error}")))
    }
}

fn encode_batches(
    schema: arrow::datatypes::SchemaRef,
    batches: impl Stream<Item = Result<arrow::array::RecordBatch, FlightError>> + Send + 'static,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// A metadata answer: the one batch a Flight SQL builder built.
fn one_batch(
    schema: arrow::datatypes::SchemaRef,
    batch: Result<arrow::array::RecordBatch, FlightError>,
) -> Response<DoGetStream> {
    encode_batches(schema, futures::stream::once(async { batch }))
}

fn info_for(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor)
        .with_ordered(true);
    Ok(Response::new(info))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// HTTP basic credentials, the password an API token: answers with the
    /// token to send as `Bearer` on later calls.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let token = match header.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default();
                decoded.split_once(':').map(|(_, p)| p.to_string())
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(rest.trim().to_string())
            }
            _ => None,
        }
        .filter(|t| self.service.caller(t).is_some())
        .ok_or_else(|| Status::unauthenticated("the password must be a valid API token"))?;
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::unauthenticated("the token is not valid in a header"))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = _> + Send>> =
            Box::pin(futures::stream::once(async { Ok(reply) }));
        let mut response = Response::new(stream);
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let job = self.job(&query.query)?;
        // Counted as the HTTP API counts its submissions (M10).
        let (accepted, _) = match self.service.submit(&caller, job).await {
            Ok(submitted) => {
                self.service.metrics.submission(200);
                submitted
            }
            Err(error) => {
                let message = error.to_string();
                let code = problem_status(error);
                self.service.metrics.submission(code);
                return Err(status_of(code, message));
            }
        };
        self.wait(&caller, &accepted.id).await?;
        let (schema, _) = self
            .service
            .result_batches(&caller, &accepted.id)
            .map_err(status)?;
        let ticket = TicketStatementQuery {
            statement_handle: accepted.id.into_bytes().into(),
        };
        info_for(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let id = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket names no job"))?;
        let (schema, batches) = self.service.result_batches(&caller, &id).map_err(status)?;
        let batches = batches.map_err(FlightError::ExternalError);
        Ok(encode_batches(schema, batches))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let builder = query.into_builder(&SQL_INFO);
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.into_builder().schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        info_for(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let list = self
            .service
            .tables(&caller, None, MAX_LISTED_TABLES)
            .await
            .map_err(status)?;
        let mut builder = query.into_builder();
        for table in &list.tables {
            let schema = schema_of(&table.columns)
                .map_err(|e| Status::internal(format!("table {}'s schema: {e}", table.name)))?;
            builder
                .append(CATALOG, SCHEMA, &table.name, "TABLE", &schema)
                .map_err(Status::from)?;
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
