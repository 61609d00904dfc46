//! `POST /v1/embeddings`: OpenAI's embeddings endpoint, served only by the
//! entries that declare it.
//!
//! An entry with `embeddings = true` names an embeddings model. The gateway
//! builds two stacks from one configuration ([`split`]): chat requests never
//! reach an embeddings model, embeddings requests reach nothing else, and each
//! stack keeps its own circuits, ramps and quotas, with the same failover. The
//! request goes to the provider's `…/embeddings` route unchanged but for the
//! model, pinned to the entry's own as for chat. Output validation, which
//! checks chat answers, is off in the embeddings stack.
//!
//! ```toml
//! [[providers]]
//! name = "openai"
//! model = "text-embedding-3-small"
//! embeddings = true
//! kind = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"
//! ```

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower_failover::{Config, Toggle};

use super::AppState;
use super::chat::{forward, upstream};

/// `config` split in two: its chat entries, and its embeddings entries (`None`
/// when no entry serves embeddings). Every other setting is the same in both.
pub fn split(config: &Config) -> (Config, Option<Config>) {
    let (embed, chat): (Vec<_>, Vec<_>) =
        config.providers.iter().cloned().partition(|p| p.embeddings);
    let mut chat_config = config.clone();
    chat_config.providers = chat;
    keep_served_groups(&mut chat_config);
    let embeddings = (!embed.is_empty()).then(|| {
        let mut c = config.clone();
        // Output validation checks chat answers (`choices`, content): a list
        // of vectors would fail it. Status, transport and shape errors of the
        // provider client still count against an entry's circuit.
        c.validate = Toggle::Off;
        c.providers = embed
            .into_iter()
            .map(|mut p| {
                p.validate = None;
                p
            })
            .collect();
        keep_served_groups(&mut c);
        c
    });
    (chat_config, embeddings)
}

/// Keeps the model groups, fallbacks and default model that the providers of one
/// half serve (a chat model's fallbacks name chat models, an embeddings model's
/// embeddings models).
fn keep_served_groups(config: &mut Config) {
    let served: std::collections::BTreeSet<String> = config
        .providers
        .iter()
        .flat_map(|p| std::iter::once(p.model.clone()).chain(p.aliases.iter().cloned()))
        .collect();
    config.models.retain(|name, _| served.contains(name));
    for group in config.models.values_mut() {
        group.fallbacks.retain(|f| served.contains(f));
    }
    if config
        .default_model
        .as_ref()
        .is_some_and(|m| !served.contains(m))
    {
        config.default_model = None;
    }
}

pub(super) async fn embeddings(State(state): State<AppState>, req: Request) -> Response {
    match state.embeddings.clone() {
        Some(failover) => {
            let req = upstream(&state, req, "/v1/embeddings");
            forward(failover, req).await
        }
        None => {
            let body = serde_json::json!({"error": {
                "message": "no provider of this gateway serves embeddings \
                            (mark an entry `embeddings = true`)",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}
