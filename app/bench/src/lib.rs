//! What `app-bench` and `queue-bench` share: order statistics, processes (child guards,
//! resident memory, tools on PATH), the Prometheus text the app exposes, and the peers they
//! measure the app against (the seed's Gin service, BullMQ).

pub mod peers;
pub mod procs;
pub mod prom;
pub mod stats;
