//! The queues dashboard (docs/dashboard.md): a static page, its script and its style compiled
//! into the app and served at `/ui/`. The page reads `GET /queues` once a second and browses
//! and replays dead letters through `/dlq/{queue}` with the admin token it asks for (kept in
//! the tab's sessionStorage): the same routes, the same admin check, as `curl` or `app dlq`.
//! The files hold no data and no secret, so they need no token; they run under a strict
//! Content-Security-Policy (no inline code, nothing from elsewhere, no framing).

use std::sync::LazyLock;

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;
use lb_api::web::Page;

/// The page (its head is lb-api's, shared with lbd's dashboard).
pub const PAGE: Page = Page {
    name: "queues",
    title: "app queues",
    body: include_str!("ui/body.html"),
    script: include_str!("ui/queues.js"),
    style: include_str!("ui/queues.css"),
};

static HTML: LazyLock<String> = LazyLock::new(|| PAGE.html());

/// `/ui/` and its files, with their security headers.
pub fn router() -> Router {
    let files = PAGE.files(HTML.as_str());
    files.into_iter().fold(
        Router::new().route("/ui", get(|| async { Redirect::to("/ui/") })),
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
    fn the_page_has_no_inline_code_and_puts_data_in_as_text() {
        PAGE.check().unwrap_or_else(|e| panic!("{e}"));
        assert!(HTML.contains("src=\"/ui/queues.js\""));
    }
}
