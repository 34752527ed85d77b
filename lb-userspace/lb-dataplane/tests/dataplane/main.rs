//! Data-plane tests: the real XDP object in the real kernel (BPF_PROG_TEST_RUN), as root.
//! Each test loads its own copy of the object, so tests never share map state.

mod fixture;

mod algorithms;
mod capture;
mod conns;
mod decap;
mod filter;
mod flood;
mod forwarding;
mod icmp;
mod malformed;
mod model;
mod object;
mod pmtu;
mod random;
mod replay;
mod second_chance;
mod stickiness;
mod toobig;
mod trace;
