//! The APDU exchange against a phone whose answers come from the fuzzer: the input is split on
//! `|` into one answer per command. The body is [`tapgate::cpm::fuzz::qris_tap`], which
//! `tests/fuzz_corpus.rs` also runs on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapgate::cpm::fuzz::qris_tap(data));
