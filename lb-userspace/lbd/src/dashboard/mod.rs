//! The web dashboard (docs/dashboard.md): a static page, its script and its style, compiled
//! into lbd and served on the API's listeners at `/ui/` (`/` redirects there). The assets
//! hold no secrets and no data, so they need no token; the page asks for one and reads the
//! API with it (`GET /v1/events`, and the drain, undrain and weight endpoints lbctl uses, so
//! every action is checked against the token's scope and audited as any other call).
//!
//! The page runs under a strict Content-Security-Policy: scripts and styles only from these
//! files (no inline code, no eval), connections only to this origin, no framing.

use std::sync::LazyLock;

use axum::{Router, response::Redirect, routing::get};
use lb_api::web::Page;

/// The page (its head is lb-api's, shared with the app's dashboard).
pub const PAGE: Page = Page {
    name: "dashboard",
    title: "lbd dashboard",
    body: include_str!("assets/body.html"),
    script: include_str!("assets/dashboard.js"),
    style: include_str!("assets/dashboard.css"),
};

static HTML: LazyLock<String> = LazyLock::new(|| PAGE.html());

/// The dashboard's routes (outside the API's token check: they serve only these files).
pub fn router() -> Router {
    let files = PAGE.files(HTML.as_str());
    files.into_iter().fold(
        Router::new()
            .route("/", get(|| async { Redirect::to("/ui/") }))
            .route("/ui", get(|| async { Redirect::to("/ui/") })),
        |r, (path, content_type, text)| {
            r.route(
                &path,
                get(move || async move { Page::response(content_type, text) }),
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_names_only_its_own_assets() {
        PAGE.check().unwrap_or_else(|e| panic!("{e}"));
        assert!(HTML.contains("src=\"/ui/dashboard.js\""));
        assert!(HTML.contains("href=\"/ui/dashboard.css\""));
    }
}
