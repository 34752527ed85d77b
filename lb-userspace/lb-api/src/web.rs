//! The part of the web pages lbd (`/ui/`) and the app (`/ui/`) both serve: the document's
//! head, the toast, the small charts, number formatting and the base style (`/ui/common.js`,
//! `/ui/common.css`, loaded before each page's own files), and the headers every file goes
//! out with. Each server lists [`Page::files`] as routes and answers them with
//! [`Page::response`].

use http_body_util::Full;
use hyper::Response;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};

/// `/ui/common.js`.
pub const COMMON_JS: &str = include_str!("../web/common.js");
/// `/ui/common.css`.
pub const COMMON_CSS: &str = include_str!("../web/common.css");

/// What the browser may do with a page: nothing but load these files and call this origin's
/// API. No inline code, nothing from elsewhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// One dashboard: its name (`/ui/NAME.js`, `/ui/NAME.css`), title and files, compiled into
/// the server. The files hold no data and no secret, so they need no token.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    /// The stem of the page's script and style.
    pub name: &'static str,
    /// The `<title>`.
    pub title: &'static str,
    /// What `<body>` holds, before the toast every page shows its messages in.
    pub body: &'static str,
    /// `/ui/NAME.js`.
    pub script: &'static str,
    /// `/ui/NAME.css`.
    pub style: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

impl Page {
    /// The whole document: the shared head (common files first, then the page's), then
    /// [`Page::body`] and the toast (`common.js` shows messages in it).
    pub fn html(&self) -> String {
        let Page {
            name, title, body, ..
        } = self;
        format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"referrer\" content=\"no-referrer\">\n<title>{title}</title>\n\
             <link rel=\"icon\" href=\"data:,\">\n\
             <link rel=\"stylesheet\" href=\"/ui/common.css\">\n\
             <link rel=\"stylesheet\" href=\"/ui/{name}.css\">\n\
             <script src=\"/ui/common.js\" defer></script>\n\
             <script src=\"/ui/{name}.js\" defer></script>\n</head>\n<body>\n{body}\n\
             <p id=\"toast\" role=\"status\" hidden></p>\n</body>\n</html>\n"
        )
    }

    /// Every file under `/ui/`: path, content type and text; `html` is [`Page::html`] (the
    /// caller keeps it for the server's lifetime).
    pub fn files(&self, html: &'static str) -> [(String, &'static str, &'static str); 5] {
        [
            ("/ui/".to_string(), HTML, html),
            (format!("/ui/{}.js", self.name), JS, self.script),
            (format!("/ui/{}.css", self.name), CSS, self.style),
            ("/ui/common.js".to_string(), JS, COMMON_JS),
            ("/ui/common.css".to_string(), CSS, COMMON_CSS),
        ]
    }

    /// A file's answer, with the security headers every file carries; the compiled-in text
    /// is served as it is, not copied per request.
    pub fn response(content_type: &'static str, text: &'static str) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        let h = resp.headers_mut();
        for (name, value) in [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Compiled in: a new server may serve new files under the same names.
            (header::CACHE_CONTROL, "no-cache"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
        resp
    }

    /// The checks both pages must pass: the CSP forbids inline script and style (the page
    /// would break silently), text goes in `textContent` (no `innerHTML`), no `eval`, nothing
    /// from elsewhere. `Err` names the file and the rule.
    pub fn check(&self) -> Result<(), String> {
        let html = self.html();
        if html.contains("<script>") || html.contains("style=") {
            return Err(format!("{}: inline script or style", self.name));
        }
        if html.contains("http://") || html.contains("https://") {
            return Err(format!("{}: a file from elsewhere", self.name));
        }
        for (file, text) in [
            ("index.html", html.as_str()),
            ("script", self.script),
            ("common.js", COMMON_JS),
        ] {
            if text.contains("innerHTML") {
                return Err(format!("{} {file}: text goes in textContent", self.name));
            }
            if text.contains("eval(") {
                return Err(format!("{} {file}: the CSP forbids eval", self.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: Page = Page {
        name: "demo",
        title: "demo page",
        body: "<main id=\"m\"></main>\n",
        script: "document.getElementById('m').textContent = 'x';",
        style: "main { color: black; }",
    };

    #[test]
    fn the_head_loads_the_common_files_then_the_pages() {
        let html = PAGE.html();
        let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(at("/ui/common.css") < at("/ui/demo.css"));
        assert!(at("/ui/common.js") < at("/ui/demo.js"));
        assert!(at("<title>demo page</title>") < at("</head>"));
        assert!(at("<main id=\"m\">") < at("<p id=\"toast\""));
        assert!(html.ends_with("</body>\n</html>\n"));
        PAGE.check().expect("the demo page passes");
        let bad = Page {
            script: "el.innerHTML = x",
            ..PAGE
        };
        assert!(bad.check().unwrap_err().contains("textContent"));
    }

    #[test]
    fn every_file_carries_the_security_headers() {
        let html: &'static str = Box::leak(PAGE.html().into_boxed_str());
        let files = PAGE.files(html);
        assert_eq!(files[1].0, "/ui/demo.js");
        for (_, ct, text) in files {
            let r = Page::response(ct, text);
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
            assert_eq!(r.headers()[header::CONTENT_TYPE], ct);
        }
    }
}
