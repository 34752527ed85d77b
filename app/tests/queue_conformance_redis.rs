//! The queue conformance suite (`support/conformance.rs`) on the Redis Streams backend.

mod support;

use support::conformance::Env;

conformance_suite!(Env::redis());
