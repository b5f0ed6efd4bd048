#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_fuzz::ingest_template::check(data));
