//! The admin endpoint under `/_sim/` on the sim's own listener.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::SimBody;
use crate::duration::format_short;
use crate::fault::FaultSpec;
use crate::quota::Quota;
use crate::sim::{Shared, SimHandle};

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<SimBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut res = Response::new(SimBody::full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<SimBody> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

fn parse_specs(body: &[u8]) -> Result<Vec<FaultSpec>, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let specs = if first == Some(&b'[') {
        serde_json::from_slice::<Vec<FaultSpec>>(body)
    } else {
        serde_json::from_slice::<FaultSpec>(body).map(|s| vec![s])
    }
    .map_err(|e| format!("expected a fault spec or a list of them: {e}"))?;
    for s in &specs {
        s.validate().map_err(|e| e.to_string())?;
    }
    Ok(specs)
}

/// Answer a request under `/_sim`.
pub(crate) async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<SimBody> {
    let h = SimHandle::from_shared(Arc::clone(shared));
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
    };
    match (method, path.as_str()) {
        (Method::GET, "/_sim" | "/_sim/info") => json(
            StatusCode::OK,
            &serde_json::json!({
                "name": h.name(),
                "flavor": h.flavor(),
                "addr": h.addr(),
                "base_url": h.base_url(),
                "elapsed": format_short(h.elapsed()),
                "faults": h.faults(),
                "counters": h.counters(),
            }),
        ),
        (Method::GET, "/_sim/faults") => json(StatusCode::OK, &h.faults()),
        (Method::POST | Method::PUT, "/_sim/faults") => match parse_specs(&body) {
            Ok(specs) => match h.set_faults(specs) {
                Ok(()) => json(StatusCode::OK, &h.faults()),
                Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
            },
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::POST, "/_sim/faults/add") => match parse_specs(&body) {
            Ok(specs) => {
                for s in specs {
                    if let Err(e) = h.add_fault(s) {
                        return error(StatusCode::BAD_REQUEST, e.to_string());
                    }
                }
                json(StatusCode::OK, &h.faults())
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::DELETE, "/_sim/faults") => {
            h.clear_faults();
            json(StatusCode::OK, &h.faults())
        }
        (Method::GET, "/_sim/counters") => json(StatusCode::OK, &h.counters()),
        (Method::DELETE, "/_sim/counters") | (Method::POST, "/_sim/counters/reset") => {
            h.reset_counters();
            json(StatusCode::OK, &h.counters())
        }
        (Method::PUT | Method::POST, "/_sim/quota") => {
            match serde_json::from_slice::<Quota>(&body) {
                Ok(q) => match h.set_quota(q) {
                    Ok(()) => json(StatusCode::OK, &q),
                    Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
                },
                Err(e) => error(StatusCode::BAD_REQUEST, format!("invalid quota: {e}")),
            }
        }
        (_, p) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no admin route {p:?}: try GET /_sim/info, GET|POST|DELETE /_sim/faults, \
                 POST /_sim/faults/add, GET|DELETE /_sim/counters, PUT /_sim/quota"
            ),
        ),
    }
}
