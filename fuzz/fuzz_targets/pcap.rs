//! The pcap reader on any bytes: an error or records; records written back read the same.
#![no_main]

use lb_dataplane::pcap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(records) = pcap::read(data) else {
        return;
    };
    let mut out = Vec::new();
    pcap::write(&mut out, &records).expect("writing to memory");
    let back = pcap::read(out.as_slice()).expect("what we wrote reads back");
    assert_eq!(back, records);
});
