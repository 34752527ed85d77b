//! Control plane library of the XDP load balancer: the data-plane loader and map programmer,
//! Maglev and weighted round-robin tables, configuration, and the tools built on them.
pub mod client;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod health;
pub mod maglev;
pub mod neighbours;
pub mod object;
pub mod packet;
pub mod pcap;
pub mod replay;
pub mod vrrp;
pub mod wrr;
