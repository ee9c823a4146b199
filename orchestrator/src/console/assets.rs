//! The pages: one `index.html`, its ES modules and its style sheet, all
//! embedded in the binary (no build step, no CDN: the console works where
//! the cluster has no way out), and the headers every answer carries.
//!
//! The page routes on the browser's path (`/plans/NAME`, ...), so each
//! such path answers `index.html` and a reload or a shared link works.
//! The Content-Security-Policy allows only this origin's scripts, styles,
//! images and connections, and no inline script or style: a name or
//! message from a resource that slips into the page as markup still
//! cannot run.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The paths the page routes on; each answers `index.html`.
pub const PAGES: &[&str] = &[
    "/",
    "/login",
    "/clusters",
    "/plans",
    "/plans/{name}",
    "/migrations/{name}",
];

/// An embedded file under `/assets/`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("format.js", JS),
    asset!("pages/login.js", JS),
    asset!("pages/clusters.js", JS),
    asset!("pages/plans.js", JS),
    asset!("pages/plan.js", JS),
    asset!("pages/new-plan.js", JS),
    asset!("pages/migration.js", JS),
    asset!("pages/chart.js", JS),
    asset!("pages/itineraries.js", JS),
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// The page, for every path it routes on.
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /assets/FILE`.
pub async fn file(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.path == path) {
        Some(asset) => ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no asset {path}")).into_response(),
    }
}

/// `GET /favicon.ico`, which browsers ask for whatever the page says.
pub async fn favicon() -> Response {
    file(Path("favicon.svg".to_string())).await
}

/// The policy: this origin only, no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers to every answer, and keeps browsers from
/// caching anything (a new controller image serves new pages at once).
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ] {
        headers.insert(name, value);
    }
    response
}
