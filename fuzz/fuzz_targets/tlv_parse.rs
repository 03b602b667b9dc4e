//! The BER-TLV parser on arbitrary bytes: no panic, and every object it returns lies inside the
//! input at the offset it claims. The body is [`tapgate::cpm::fuzz::tlv_parse`], which
//! `tests/fuzz_corpus.rs` also runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapgate::cpm::fuzz::tlv_parse(data));
