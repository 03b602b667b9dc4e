//! The BER-TLV parser on arbitrary bytes: no panic, and every object it returns lies inside the
//! input at the offset it claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapgate::cpm::tlv::{parse, Tlv};

fn walk(data: &[u8], objs: &[Tlv<'_>]) {
    for o in objs {
        assert!(o.offset < data.len());
        assert!(o.value.len() <= data.len() - o.offset);
        walk(data, &o.children);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(objs) = parse(data) {
        walk(data, &objs);
    }
});
