//! The web dashboard (docs/dashboard.md): a static page, its script and its style, compiled
//! into lbd and served on the API's listeners at `/ui/` (`/` redirects there). The assets
//! hold no secrets and no data, so they need no token; the page asks for one and reads the
//! API with it (`GET /v1/events`, and the drain, undrain and weight endpoints lbctl uses, so
//! every action is checked against the token's scope and audited as any other call).
//!
//! The page runs under a strict Content-Security-Policy: scripts and styles only from these
//! files (no inline code, no eval), connections only to this origin, no framing.

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

/// What the browser may do with the page: nothing but load these assets and call this API.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// The dashboard's routes (outside the API's token check: they serve only these files).
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/common.js",
            get(|| async { asset("text/javascript; charset=utf-8", lb_api::web::COMMON_JS) }),
        )
        .route(
            "/ui/common.css",
            get(|| async { asset("text/css; charset=utf-8", lb_api::web::COMMON_CSS) }),
        )
        .route(
            "/ui/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Compiled in: a new lbd may serve new files under the same names.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_names_only_its_own_assets() {
        // The CSP forbids inline script and style: the page would break silently.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
        for (name, text) in [
            ("dashboard.js", SCRIPT),
            ("index.html", INDEX),
            ("common.js", lb_api::web::COMMON_JS),
        ] {
            assert!(
                !text.contains("innerHTML"),
                "{name}: text goes in textContent"
            );
            assert!(!text.contains("eval("), "{name}: the CSP forbids eval");
        }
        assert!(INDEX.contains("src=\"/ui/dashboard.js\""));
        assert!(INDEX.contains("href=\"/ui/dashboard.css\""));
    }
}
