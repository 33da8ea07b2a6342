//! Logs and traces: what every Squall process (the CLI, the server, the
//! Lambda function) installs to write its log and export its spans, and the
//! trace context a task attempt carries to its executor.
//!
//! # What belongs here
//! The subscriber: log lines as text or JSON (`--log-format`,
//! `SQUALL_LOG_FORMAT`, or Lambda's `AWS_LAMBDA_LOG_FORMAT=JSON`), filtered by
//! `SQUALL_LOG` or else `RUST_LOG`; spans exported over OTLP/gRPC when the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set.
//! Squall's spans (`job`, `stage`, `attempt`, `task`, ...) carry the job,
//! stage, task and attempt they belong to, so a JSON line logged inside one
//! names them. And the W3C `traceparent` that joins an executor's spans to
//! the attempt that started it, wherever it runs.

use std::collections::HashMap;
use std::str::FromStr;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::Span;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's
    /// fields (`message` among them) and `span`, the fields of the innermost
    /// span (a Squall span has `job`, and where known `stage`, `task`,
    /// `attempt`).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("log format '{text}' is neither text nor json")),
        }
    }
}

impl LogFormat {
    /// The format the environment asks for: `SQUALL_LOG_FORMAT`, else JSON
    /// when Lambda's own log format is (`AWS_LAMBDA_LOG_FORMAT=JSON`).
    pub fn from_env() -> Result<Self, String> {
        if let Ok(text) = std::env::var("SQUALL_LOG_FORMAT") {
            return text.parse();
        }
        let lambda = std::env::var("AWS_LAMBDA_LOG_FORMAT").unwrap_or_default();
        Ok(if lambda.eq_ignore_ascii_case("json") {
            Self::Json
        } else {
            Self::Text
        })
    }
}

/// The log filter: `SQUALL_LOG`, else `RUST_LOG` (EnvFilter directives such
/// as `info` or `squall_engine=debug,warn`), else `default`.
fn log_filter(default: &str) -> EnvFilter {
    ["SQUALL_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| {
            let value = std::env::var(name).ok()?;
            match EnvFilter::try_new(&value) {
                Ok(filter) => Some(filter),
                Err(e) => {
                    eprintln!("warning: {name}={value} is not a log filter ({e}); using {default}");
                    None
                }
            }
        })
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// Squall's own spans (and events, unless `spans_only`) at `level` or
/// above: what a trace is made of, and the spans whose ids a log line names.
/// Decided from a callsite's metadata alone, so each callsite is asked once
/// and the rest (DataFusion's, the AWS SDK's, hyper's) are never asked again:
/// a filter that answered "sometimes" would put every `debug!` and `trace!`
/// of every crate through a check, tracing on or off.
#[derive(Debug, Clone, Copy)]
struct SquallOwn {
    level: LevelFilter,
    spans_only: bool,
}

impl SquallOwn {
    fn admits(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.target().starts_with("squall")
            && self.level >= *meta.level()
            && (!self.spans_only || meta.is_span())
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for SquallOwn {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.admits(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if self.admits(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }
}

/// Log lines as JSON objects, one a line: `timestamp` (RFC 3339), `level`,
/// `target`, the fields of every span the event is in (outermost first, an
/// inner span's field replacing an outer one's of the same name), `span` (the
/// innermost span's name) and the event's own fields, `message` among them.
/// Flat, so that CloudWatch Logs Insights and Loki see `job`, `stage`,
/// `task` and `attempt` as fields of the line.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = Map::new();
        let mut now = String::new();
        SystemTime.format_time(&mut Writer::new(&mut now))?;
        line.insert("timestamp".into(), Value::String(now));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str(fields.as_str())
                {
                    line.extend(fields);
                }
                innermost = Some(span.name());
            }
            if let Some(name) = innermost {
                line.insert("span".into(), Value::String(name.to_string()));
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records an event's fields into a JSON object.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

/// What [`init`] installed: the span exporter, if any, to flush and to shut
/// down at the end of `main`.
#[must_use = "dropping it stops the span exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans ended so far before returning: a Lambda function
    /// calls it before it answers, as its process may be frozen after. (The
    /// exporter's thread waits on the gRPC connection, which lives on the
    /// runtime: the wait is off the runtime's workers.)
    pub async fn flush(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Some(e) = flushed
            .map_err(|e| e.to_string())
            .and_then(|done| done.map_err(|e| e.to_string()))
            .err()
        {
            tracing::warn!(error = %e, "spans could not be exported");
        }
    }

    /// Exports what is left and stops the exporter (the end of `main`).
    pub async fn shutdown(mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = stopped {
            eprintln!("warning: the last spans could not be exported: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Not shut down (a panic, an early return): export what the batch
        // holds, on this thread.
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Whose traces a process's spans join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traces {
    /// It starts them: a job's span is a trace's root (the control plane).
    Start,
    /// It only continues those a task spec names (an executor function): a
    /// span without a sampled parent is not recorded, so that invocations
    /// from an untraced control plane export nothing.
    Continue,
}

/// Installs the process's subscriber: log lines to standard error in
/// `format`, filtered as [`log_filter`] says (`default` without a variable),
/// and when the OTLP variables name an endpoint, Squall's spans exported
/// there as service `service` (or `OTEL_SERVICE_NAME`). Must run inside a
/// Tokio runtime (the gRPC exporter's connection lives on it).
pub fn init(default: &str, format: LogFormat, service: &str, traces: Traces) -> Telemetry {
    // The log's filter for events; Squall's spans always pass it so that a
    // line logged inside one can name its ids, whatever the level.
    let lines = log_filter(default).or(SquallOwn {
        level: LevelFilter::INFO,
        spans_only: true,
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(false).boxed(),
        LogFormat::Json => fmt
            .event_format(FlatJson)
            .fmt_fields(JsonFields::new())
            .boxed(),
    };
    let (provider, problem) = match tracer_provider(service, traces) {
        Ok(provider) => (provider, None),
        Err(problem) => (None, Some(problem)),
    };
    let otel = provider.as_ref().map(|provider| {
        // No busy/idle timing of each poll (a span's start and end are what
        // a trace shows), no source locations or thread names per span.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("squall"))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_filter(SquallOwn {
                level: LevelFilter::INFO,
                spans_only: false,
            })
    });
    Registry::default()
        .with(fmt.with_filter(lines))
        .with(otel)
        .init();
    if let Some(problem) = problem {
        tracing::warn!("spans are not exported: {problem}");
    }
    Telemetry { provider }
}

/// The OTLP/gRPC span exporter the standard variables ask for, if any.
fn tracer_provider(service: &str, traces: Traces) -> Result<Option<SdkTracerProvider>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "grpc".into());
    if protocol != "grpc" {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: Squall exports OTLP over grpc only \
             (port 4317 of a collector)"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("the OTLP exporter cannot start: {e}"))?;
    let name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource);
    if traces == Traces::Continue {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
    }
    Ok(Some(builder.build()))
}

/// The W3C `traceparent` of the current span, if spans are exported and
/// one is current: what a task spec carries to its executor.
pub fn trace_context() -> Option<String> {
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span `traceparent` names (from another
/// process, or a task spawned apart). A malformed one is ignored: a trace is
/// never a reason to fail a task.
pub fn set_parent(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of `span` as 32 hex digits, if spans are exported.
pub fn trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_parse() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().unwrap_err().contains("yaml"));
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_fields_of_every_enclosing_span() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(FlatJson)
            .fmt_fields(JsonFields::new())
            .with_writer(move || writer.clone());
        let subscriber = Registry::default().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let job = tracing::info_span!("job", job = "j-1");
            let _job = job.enter();
            let attempt = tracing::info_span!("attempt", stage = 2u32, task = 7u32, attempt = 1u32);
            let _attempt = attempt.enter();
            let decode = tracing::info_span!("decode");
            let _decode = decode.enter();
            tracing::warn!(rows = 5u64, "slow \"read\"");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["job"], "j-1", "{line}");
        assert_eq!(
            (&line["stage"], &line["task"], &line["attempt"]),
            (&2.into(), &7.into(), &1.into()),
            "{line}"
        );
        assert_eq!(line["span"], "decode", "{line}");
        assert_eq!(line["message"], "slow \"read\"", "{line}");
        assert_eq!(
            (&line["rows"], &line["level"]),
            (&5.into(), &"WARN".into()),
            "{line}"
        );
        assert!(line["timestamp"].as_str().unwrap().contains('T'), "{line}");
    }

    #[test]
    fn without_an_exporter_there_is_no_trace_context() {
        let span = tracing::info_span!("job");
        let _entered = span.enter();
        assert_eq!(trace_context(), None);
        assert_eq!(trace_id(&span), None);
        // A malformed parent is ignored, not a panic.
        set_parent(&span, Some("not a traceparent"));
    }
}
