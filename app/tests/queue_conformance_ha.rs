//! The queue conformance suite (`support/conformance.rs`) on highly available Redis, with
//! real servers started by the test binary: a 3-master 3-replica Redis Cluster, every queue
//! over 3 partitions (one per master), and a Sentinel set (1 master, 2 replicas, 3
//! sentinels). One of each is shared by the tests of this binary (each test has its own key
//! prefix) and killed when it exits.

mod support;

use support::conformance::Env;

mod cluster {
    use super::Env;

    crate::conformance_suite!(Env::cluster());
}

mod sentinel {
    use super::Env;

    crate::conformance_suite!(Env::sentinel());
}
