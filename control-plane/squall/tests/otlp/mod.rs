//! What the trace tests share: an OTLP/gRPC trace receiver (the protocol's
//! own messages, from `opentelemetry-proto`) on loopback, and helpers.

#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::Span;

/// The spans received, with the service that sent each.
#[derive(Clone, Default)]
pub struct Receiver(pub Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone());
            let service = match service {
                Some(Value::StringValue(s)) => s,
                _ => String::new(),
            };
            for scope in resource.scope_spans {
                received.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on `address` (port 0: a free one); its endpoint URL.
pub async fn receiver(spans: Receiver, address: &str) -> String {
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(spans))
            .serve_with_incoming(incoming),
    );
    format!("http://127.0.0.1:{port}")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn squall(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_squall"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("squall runs")
}

/// A span's attribute as text (integers as their digits).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|a| a.key == key)?;
    match value.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that the executor's `task` span has its `decode` and `execute`
/// children among `spans`.
pub fn assert_task_steps<'a>(spans: impl Iterator<Item = &'a Span>, task: &Span) {
    let steps: std::collections::BTreeSet<&str> = spans
        .filter(|s| s.parent_span_id == task.span_id)
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        steps.contains("decode") && steps.contains("execute"),
        "{steps:?}"
    );
}
