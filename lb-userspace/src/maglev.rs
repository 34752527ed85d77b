//! Maglev consistent hashing (placeholder).
