#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_fuzz::detokenizer::check(data));
