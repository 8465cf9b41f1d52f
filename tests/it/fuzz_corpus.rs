//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`), replayed on
//! the stable toolchain through the same entry points cargo-fuzz runs
//! (`switchboard::fuzzing`), with truncated and bit-flipped variants of
//! every seed: an input that once crashed a target stays fixed.

use std::path::Path;

#[test]
fn fuzz_corpus_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut seen = 0;
    for (name, target) in switchboard::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name} has no seed");
        for path in files {
            let seed = std::fs::read(&path).unwrap();
            let what = path.display().to_string();
            let run = |bytes: &[u8]| {
                if std::panic::catch_unwind(|| target(bytes)).is_err() {
                    panic!("{what} ({} bytes variant) panicked", bytes.len());
                }
            };
            run(&seed);
            // Cut at a few points, and a byte flipped at a few others: a
            // repeatable step toward what the fuzzer tries.
            for i in 1..8 {
                let at = seed.len() * i / 8;
                run(&seed[..at]);
                let mut flipped = seed.clone();
                if let Some(b) = flipped.get_mut(at) {
                    *b ^= 0x20 | (i as u8);
                }
                run(&flipped);
            }
            seen += 1;
        }
    }
    assert!(seen >= 6);
}
