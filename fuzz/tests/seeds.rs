//! Writes the seed inputs that are made by running the server's own code (not by hand)
//! into the corpora: `cargo test -p marquee-fuzz --test seeds -- --ignored`.

#[test]
#[ignore = "writes into fuzz/corpus/; run by hand to regenerate seeds"]
fn write_wal_frames_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/wal_frames");
    std::fs::create_dir_all(&dir).expect("the corpus directory");
    for (name, bytes) in marquee_fuzz::wal_frames::seeds() {
        marquee_fuzz::wal_frames::check(&bytes);
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed");
    }
}
