//! The web console: pages under `/ui`, their script and style embedded in the binary at
//! build time, and `GET /v1/whoami`, which tells the console (and anyone) who a token is
//! and what it may do.
//!
//! Every page is the same small document; its script reads the API with the token the user
//! typed (kept in the tab's `sessionStorage`, sent as `Authorization: Bearer`, never in a
//! URL) and renders the page from the answers. So the console sees exactly what the API
//! shows that token, and does only what its policy allows. Nothing is fetched from
//! anywhere but this dispatcher (`Content-Security-Policy` says so to the browser).

use std::sync::{Arc, LazyLock};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{auth::Caller, context::Context, error::Error};

/// What `console.trace_url` writes where an operation's trace id goes.
pub const TRACE_ID_PLACEHOLDER: &str = "{trace_id}";

/// One embedded file.
struct Asset {
    content_type: &'static str,
    body: &'static str,
    etag: String,
}

impl Asset {
    fn new(content_type: &'static str, body: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex(&digest[..12]));
        Self {
            content_type,
            body,
            etag,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

static PAGE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
});
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
});
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("text/css; charset=utf-8", include_str!("assets/app.css")));

/// The browser may load scripts, styles and data from this dispatcher only, and nothing
/// may frame the console.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's pages and assets, as [`crate::api::ROUTES`] lists the API's.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/ui", &["GET"]),
    ("/ui/", &["GET"]),
    ("/ui/assets/{file}", &["GET"]),
    ("/ui/{*path}", &["GET"]),
];

/// The console's routes (none when `console.enabled` is off), and `GET /v1/whoami`.
pub fn routes(ctx: &Context) -> Router<Arc<Context>> {
    let router = Router::new().route("/v1/whoami", get(whoami));
    if !ctx.config.console.enabled {
        return router;
    }
    router
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/{*path}", get(page))
}

async fn page(headers: HeaderMap) -> Response {
    serve(&PAGE, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match file.as_str() {
        "app.js" => serve(&SCRIPT, &headers),
        "app.css" => serve(&STYLE, &headers),
        _ => Error::Missing(format!("console asset {file:?}")).into_response(),
    }
}

fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == asset.etag.as_bytes());
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut response = if fresh {
        status.into_response()
    } else {
        (status, asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, etag);
    }
    // Revalidated on every load, so a new dispatcher version's console is seen at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /v1/whoami`: who the caller is and what it may do.
async fn whoami(State(ctx): State<Arc<Context>>, caller: Caller) -> Response {
    Json(json!({
        "who": caller.who,
        "source": caller.source,
        "readOnly": caller.read_only,
        "open": ctx.auth.is_open(),
        "may": {
            "actions": caller.actions(),
            "rolloutControls": caller.rollout_controls(),
            "manageClusters": caller.may_manage_clusters(),
        },
        "console": {
            "traceUrl": ctx.config.console.trace_url,
        },
    }))
    .into_response()
}

#[cfg(test)]
mod tests;
