//! The lab's topology file (`vagrant/topology.json`) on any text: a topology or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tests::Topology;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Topology::from_json(text);
    }
});
