//! The shape of the compiled object, checked where no packet test would notice a change:
//! aya's `#[xdp]` wraps a program's body in an inner function, and once the body outgrew
//! LLVM's inlining threshold the entry became a two-instruction call into it, a BPF-to-BPF
//! call on every packet (non-VIP pass went from 28 to 35 ns, every path slower alike).

use lb_dataplane::object;

/// The pipeline is some 4,000 instructions; a wrapper around a call is 2.
const MIN_PIPELINE_INSNS: usize = 1_000;

#[test]
fn programs_carry_their_pipeline_inline() {
    let bytes = object::bytes().expect("the embedded object (run `cargo xtask build-ebpf`)");
    let obj = aya_obj::Object::parse(&bytes).expect("parse the object");
    for (name, min) in [
        (lb_common::names::PROG_BALANCER, MIN_PIPELINE_INSNS),
        (lb_common::names::PROG_DECAP, 100),
    ] {
        let prog = &obj.programs[name];
        let func = &obj.functions[&prog.function_key()];
        assert!(
            func.instructions.len() >= min,
            "{name} has {} instructions: its body is no longer inlined into the entry (mark it \
             #[inline(always)] under #[xdp])",
            func.instructions.len()
        );
    }
}
