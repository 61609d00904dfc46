//! Logs (`[log]`): human-readable text, or one JSON object per line for log
//! collectors, on stderr.
//!
//! ```toml
//! [log]
//! format = "json"     # or "text" (the default); TOWER_FAILOVER_LOG_FORMAT overrides it
//! level = "info"      # a tracing filter; RUST_LOG overrides it
//! ```
//!
//! A JSON line: `{"timestamp":"2026-…Z","level":"INFO","target":"tower_failover_gateway",
//! "message":"request","method":"POST","path":"/v1/chat/completions","status":200,…}`.
//! The gateway never logs headers, bodies or keys.
//!
//! Lines are written by a thread of their own, never on a request's path: a log
//! output that reads slowly costs log lines (dropped past 8192 waiting, and
//! counted in a line of their own), never requests.

mod lines;

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::otlp::{OtlpConfig, OtlpGuard};
use crate::telemetry::{RequestIds, SpanRequestId};
use tracing_subscriber::Layer as _;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: `2026-… INFO tower_failover_gateway: request method=POST …`.
    #[default]
    Text,
    /// For machines: one JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{s:?} is not a log format: use \"text\" or \"json\""
            )),
        }
    }
}

/// `[log]`. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// Text or JSON. Default: text.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `warn,tower_failover=debug`). Default: `info`.
    pub level: String,
    /// `[log.otlp]`: export the spans to an OpenTelemetry collector (feature
    /// `otlp`; see [`otlp`](crate::otlp)). Default: none.
    pub otlp: Option<OtlpConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
            otlp: None,
        }
    }
}

/// Keeps the logger's output and the OTLP export running; dropping it writes out
/// the lines still queued (waiting up to two seconds) and stops the export.
#[derive(Debug)]
#[must_use = "dropping it stops the export and may lose the last log lines"]
pub struct LogGuard {
    lines: Option<lines::Lines>,
    export: OtlpGuard,
}

impl LogGuard {
    /// Writes out the lines queued so far, and sends the spans ended so far.
    pub fn flush(&self) {
        if let Some(lines) = &self.lines {
            lines.flush();
        }
        self.export.flush();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(lines) = &self.lines {
            lines.flush();
        }
    }
}

/// Installs the process's logger on stderr, and the OTLP export when `[log.otlp]`
/// is set (call it in a tokio runtime then). An invalid `level` falls back to
/// `info` with a warning. Does nothing if a logger is already installed. Keep the
/// guard while the gateway runs: dropping it writes out the last lines and stops
/// the export.
pub fn init(config: &LogConfig) -> LogGuard {
    let (filter, bad) = match EnvFilter::try_new(&config.level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    // Text lines show each span's fields; JSON lines name the spans and carry the
    // request id that `RequestIds` keeps.
    let out = lines::Lines::start(std::io::stderr(), lines::QUEUE_LINES);
    let lines = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(out.clone())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(Json)
            .with_writer(out.clone())
            .boxed(),
    };
    #[cfg(feature = "otlp")]
    let (export, guard, failed) = match config.otlp.as_ref().map(crate::otlp::layer) {
        Some(Ok((layer, guard))) => (Some(layer), guard, None),
        Some(Err(e)) => (None, OtlpGuard::default(), Some(e)),
        None => (None, OtlpGuard::default(), None),
    };
    #[cfg(not(feature = "otlp"))]
    let (export, guard, failed) = (
        None::<tracing_subscriber::layer::Identity>,
        OtlpGuard::default(),
        config
            .otlp
            .as_ref()
            .map(|_| "this gateway was built without the `otlp` feature".to_owned()),
    );
    let installed = tracing_subscriber::registry()
        .with(lines)
        .with(RequestIds)
        .with(export)
        .with(filter)
        .try_init();
    if installed.is_ok() {
        if let Some(e) = bad {
            tracing::warn!(level = %config.level, error = %e, "invalid log level; logging at info");
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "[log.otlp]: spans are not exported");
        }
    }
    LogGuard {
        lines: installed.is_ok().then_some(out),
        export: guard,
    }
}

/// One JSON object per event: timestamp, level, target, the spans it is in, and
/// its fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let meta = event.metadata();
        let mut fields = Fields(Map::new());
        fields.0.insert("timestamp".into(), Value::String(time));
        fields
            .0
            .insert("level".into(), Value::String(meta.level().to_string()));
        fields
            .0
            .insert("target".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            let mut request_id = None;
            let spans: Vec<Value> = scope
                .from_root()
                .map(|s| {
                    if let Some(SpanRequestId(id)) = s.extensions().get::<SpanRequestId>() {
                        request_id = Some(id.clone());
                    }
                    Value::String(s.name().to_owned())
                })
                .collect();
            if !spans.is_empty() {
                fields.0.insert("spans".into(), Value::Array(spans));
            }
            if let Some(id) = request_id {
                fields.0.insert("request_id".into(), Value::String(id));
            }
        }
        event.record(&mut fields);
        let line = serde_json::to_string(&fields.0).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().to_owned(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_the_fields() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(Json)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber.with(RequestIds), || {
            let span = tracing::info_span!("conn");
            let _e = span.enter();
            let http = tracing::info_span!("http", request_id = "req-7");
            let _h = http.enter();
            tracing::info!(status = 200u16, path = "/v1/models", ok = true, "request");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "request");
        assert_eq!(line["status"], 200);
        assert_eq!(line["path"], "/v1/models");
        assert_eq!(line["ok"], true);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["spans"][0], "conn");
        assert_eq!(line["spans"][1], "http");
        assert_eq!(line["request_id"], "req-7", "{line}");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn formats_parse_and_refuse() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
