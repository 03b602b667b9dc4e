//! The CPM decoder on arbitrary bytes, as BER-TLV and as payload text: whatever it accepts holds
//! a QRIS PAN, and no view, warning, report or error shows more than the masked PAN. The body is
//! [`tapgate::cpm::fuzz::cpm_decode`], which `tests/fuzz_corpus.rs` also runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapgate::cpm::fuzz::cpm_decode(data));
