//! `[log.otlp]`: the gateway's spans exported over OTLP/gRPC to an OpenTelemetry
//! collector (feature `otlp`).
//!
//! ```toml
//! [log.otlp]
//! endpoint = "http://127.0.0.1:4317"     # the collector's OTLP/gRPC address
//! service_name = "tower-failover-gateway" # the default
//! ```
//!
//! Every span goes: the `http` span of each request, the stack's `request` span
//! and one `attempt` span per provider tried, with the OpenTelemetry names for
//! generative AI (`gen_ai.system`, `gen_ai.request.model`,
//! `gen_ai.usage.input_tokens`, …; see `tower_failover::trace`). Spans are sent in
//! batches; the rest are flushed when the gateway stops. A gateway built without
//! the feature logs a warning and exports nothing.

use serde::Deserialize;

/// `[log.otlp]`. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// The `service.name` of the exported spans. Default: `tower-failover-gateway`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_service_name() -> String {
    "tower-failover-gateway".to_owned()
}

impl OtlpConfig {
    /// Export to `endpoint` as `tower-failover-gateway`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            service_name: default_service_name(),
        }
    }
}

/// Keeps the exporter running; flushes what is left and stops it when dropped.
#[derive(Debug, Default)]
#[must_use = "dropping it stops the export"]
pub struct OtlpGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl OtlpGuard {
    /// Sends the spans ended so far now, without waiting for the next batch.
    pub fn flush(&self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = &self.provider
            && let Err(e) = provider.force_flush()
        {
            tracing::warn!(error = %e, "OTLP export: flush failed");
        }
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "OTLP export: shutdown failed");
        }
    }
}

/// The tracing layer exporting to `config`'s collector, and its guard. Call it in a
/// tokio runtime (the gRPC client lives there).
#[cfg(feature = "otlp")]
pub fn layer<S>(
    config: &OtlpConfig,
) -> Result<(impl tracing_subscriber::Layer<S>, OtlpGuard), String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&config.endpoint)
        .build()
        .map_err(|e| format!("OTLP exporter for {}: {e}", config.endpoint))?;
    Ok(layer_with(exporter, &config.service_name))
}

/// The tracing layer exporting through `exporter` in batches.
#[cfg(feature = "otlp")]
fn layer_with<S, E>(
    exporter: E,
    service_name: &str,
) -> (impl tracing_subscriber::Layer<S>, OtlpGuard)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    E: opentelemetry_sdk::trace::SpanExporter + 'static,
{
    use opentelemetry::trace::TracerProvider as _;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("tower-failover-gateway");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    (
        layer,
        OtlpGuard {
            provider: Some(provider),
        },
    )
}

#[cfg(test)]
mod parse {
    use super::*;

    #[test]
    fn the_section_parses_with_its_default_name() {
        let log: crate::LogConfig =
            toml::from_str("[otlp]\nendpoint = \"http://127.0.0.1:4317\"\n").unwrap();
        assert_eq!(log.otlp, Some(OtlpConfig::new("http://127.0.0.1:4317")));
        let bad = toml::from_str::<crate::LogConfig>("[otlp]\nendpont = \"x\"\n");
        assert!(bad.is_err(), "a misspelt key is refused");
    }
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tower_failover::ProviderId;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_stack_spans_reach_opentelemetry_with_their_gen_ai_names() {
        let exporter = InMemorySpanExporter::default();
        let (layer, guard) = layer_with(exporter.clone(), "gw-test");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let http = tracing::info_span!("http", request_id = "r-1");
            let _h = http.enter();
            let request = tower_failover::trace::request_span(&http::HeaderMap::new());
            let _r = request.enter();
            let id = ProviderId::new("openai", "gpt-4o-mini");
            let attempt = tower_failover::trace::attempt_span(&id, 1, &http::HeaderMap::new());
            tower_failover::trace::record_outcome(&attempt, &tower_failover::Outcome::Success);
            tower_failover::trace::record_usage(&attempt, 12, 5, None);
        });
        guard.flush();
        let spans = exporter.get_finished_spans().unwrap();
        let attempt = spans
            .iter()
            .find(|s| s.name == "attempt")
            .expect("the attempt span is exported");
        let attr = |k: &str| {
            attempt
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("gen_ai.system").as_deref(), Some("openai"));
        assert_eq!(attr("gen_ai.request.model").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(attr("gen_ai.usage.input_tokens").as_deref(), Some("12"));
        assert_eq!(attr("failover.outcome").as_deref(), Some("success"));
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        assert_eq!(attempt.parent_span_id, request.span_context.span_id());
        assert!(spans.iter().any(|s| s.name == "http"));
    }
}
