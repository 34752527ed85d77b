//! The RabbitMQ backend of the queue (`queue.backend = "rabbitmq"`).
//!
//! The broker carries the messages: durable queues, persistent messages, publisher
//! confirms, manual acknowledgements with a prefetch limit, retries and delayed jobs
//! through per-level delay queues (message TTL + dead-letter exchange), a dead-letter
//! queue per queue, and a topic exchange for first publishes so other consumers can bind
//! to the events they want. Redis keeps what the broker cannot: the job records (state,
//! attempts, history, result), idempotency keys, the rate-limit windows and an outbox of
//! publishes not confirmed yet. See `app/docs/queue.md`.

pub(crate) mod broker;
pub(crate) mod consume;
mod deliver;
pub(crate) mod dlq;
pub(crate) mod produce;
mod scripts;
pub(crate) mod topology;
