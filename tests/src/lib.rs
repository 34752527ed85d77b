//! Lab helper (placeholder).
