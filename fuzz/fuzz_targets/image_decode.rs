#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| marquee_fuzz::image_decode::check(data));
