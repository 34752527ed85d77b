//! The queues dashboard (docs/dashboard.md): a static page, its script and its style compiled
//! into the app and served at `/ui/`. The page reads `GET /queues` once a second and browses
//! and replays dead letters through `/dlq/{queue}` with the admin token it asks for (kept in
//! the tab's sessionStorage): the same routes, the same admin check, as `curl` or `app dlq`.
//! The files hold no data and no secret, so they need no token; they run under a strict
//! Content-Security-Policy (no inline code, nothing from elsewhere, no framing).

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Redirect;
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

/// Scripts, styles and requests only from this origin; nothing inline; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/queues.js");
const STYLE: &str = include_str!("ui/queues.css");

/// `/ui/` and its two files, with their security headers.
pub fn router() -> Router {
    let files = Router::new()
        .route(
            "/ui/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX) }),
        )
        .route(
            "/ui/queues.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/ui/common.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    lb_api::web::COMMON_JS,
                )
            }),
        )
        .route(
            "/ui/common.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    lb_api::web::COMMON_CSS,
                )
            }),
        )
        .route(
            "/ui/queues.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        );
    let headers: [(HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Compiled in: a new app may serve new files under the same names.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let files = headers.into_iter().fold(files, |r, (name, value)| {
        r.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ))
    });
    files.route("/ui", get(|| async { Redirect::to("/ui/") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_puts_data_in_as_text() {
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("eval("));
        assert!(INDEX.contains("src=\"/ui/queues.js\""));
    }
}
