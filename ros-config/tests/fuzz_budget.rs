//! A fuzz run with a fixed time budget on stable Rust (the cargo-fuzz target in `fuzz/`
//! needs nightly): the testdata files, mutated by a seeded xorshift (byte flips, inserted
//! YAML punctuation, truncation, splices of two files), through everything the fuzz target
//! calls. Any panic fails the test. `ROS_FUZZ_SECONDS` sets the budget (default 10 s);
//! `ROS_FUZZ_SEED` the seed (default: a fixed one, so a failure repeats).

use std::time::{Duration, Instant};

use ros_config::{parse_user_data, resolve, validate_text, Cmdline, Layer, Mode};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const PUNCTUATION: &[&[u8]] = &[
    b":",
    b"- ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"\n  ",
    b"\t",
    b"'",
    b"\"",
    b"? ",
    b"|\n",
    b">-\n",
    b"---\n",
    b"#",
    b"\0",
    b"\xff",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(8) {
        match rng.below(5) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(data.len() + 1);
                let p = PUNCTUATION[rng.below(PUNCTUATION.len())];
                data.splice(at..at, p.iter().copied());
            }
            2 if !data.is_empty() => {
                let at = rng.below(data.len());
                data.truncate(at);
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let at = rng.below(data.len() + 1);
                data.splice(at..at, other[from..].iter().copied());
            }
            _ if !data.is_empty() => {
                // Repeat a slice: deep nesting and long lines.
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(16)).min(data.len());
                let piece = data[start..end].to_vec();
                for _ in 0..rng.below(64) {
                    data.splice(start..start, piece.iter().copied());
                }
            }
            _ => {}
        }
    }
    data
}

fn exercise(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = validate_text("fuzz.yml", &text, Mode::Strict);
    if let Ok(layer) = Layer::parse("fuzz.yml", &text) {
        let cmdline = Cmdline::parse(&text);
        let _ = resolve(vec![layer, cmdline.layer()], Mode::Boot);
    }
    let _ = parse_user_data(data);
}

#[test]
fn config_parser_survives_a_timed_fuzz_run() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty());
    let budget = std::env::var("ROS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let seed = std::env::var("ROS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_CAFE_F00D_u64);
    let mut rng = Rng(seed | 1);
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < Duration::from_secs(budget) {
        let input = mutate(&mut rng, &seeds);
        let caught = std::panic::catch_unwind(|| exercise(&input));
        assert!(
            caught.is_ok(),
            "panic on input #{runs} (seed {seed}): {:?}",
            String::from_utf8_lossy(&input)
        );
        runs += 1;
    }
    eprintln!("fuzz: {runs} inputs in {budget} s (seed {seed}), no panic");
    assert!(runs > 0);
}
