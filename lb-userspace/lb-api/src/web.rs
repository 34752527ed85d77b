//! The part of the web pages lbd (`/ui/`) and the app (`/ui/`) both serve: the toast, the
//! small charts, number formatting and the base style, as `/ui/common.js` and
//! `/ui/common.css` (each page loads them before its own files).

/// `/ui/common.js`.
pub const COMMON_JS: &str = include_str!("../web/common.js");
/// `/ui/common.css`.
pub const COMMON_CSS: &str = include_str!("../web/common.css");
