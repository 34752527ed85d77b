//! The queue conformance suite (`support/conformance.rs`) on the RabbitMQ backend, with one
//! rabbitmq-server shared by every test of this binary (each test has its own prefix).

mod support;

use support::conformance::Env;

conformance_suite!(Env::rabbit());
