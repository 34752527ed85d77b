//! Control plane library of the XDP load balancer.
pub mod maglev;
