//! The fuzz targets' checks on every test run, without libFuzzer.
//!
//! `scripts/fuzz` runs the cargo-fuzz targets with coverage feedback, but their
//! instrumented build takes about a quarter of an hour cold: too slow for CI. This
//! test runs the same checks (`fuzz/checks.rs`, shared with the targets) over
//!
//! 1. every committed seed in `fuzz/seeds/<target>/` (a crash input copied there
//!    becomes a regression test; that is how findings of long runs are kept),
//! 2. every libFuzzer crash input in `fuzz/artifacts/<target>/crash-*` (not committed;
//!    replayed when present so a local finding fails `cargo test` until it is fixed
//!    and copied to the seeds), and
//! 3. a bounded, seeded, deterministic mutation loop: bit flips, byte inserts and
//!    deletes, splices between inputs, and interesting values (deep nesting, huge
//!    numbers, NaN, invalid UTF-8, lone surrogates, over-long strings, spool frame
//!    words), stacked and fed back through a small pool of accepted inputs so the
//!    mutations reach past the first parse error.
//!
//! A failing input is printed as hex with the command that stores it as a seed.
//! `HUSH_FUZZ_ITERS` (default 20,000 per target) and `HUSH_FUZZ_SEED` widen or vary
//! the loop for a longer local run; the default is the same inputs on every run.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const DEFAULT_ITERS: usize = 20_000;
const DEFAULT_SEED: u64 = 0x6875_7368_6675_7a7a; // "hushfuzz"
/// Largest mutated input: above `page_url::MAX_URL_BYTES` (16 KiB) so the length
/// limit is reached, small enough to keep a debug build fast.
const MAX_INPUT: usize = 40 * 1024;
/// Accepted inputs kept for further mutation (besides the seeds).
const POOL_SIZE: usize = 256;

type Check = fn(&[u8]) -> bool;

/// Values parsers get wrong: structure, numbers, encodings, limits, formats.
const TOKENS: &[&[u8]] = &[
    // JSON structure and literals.
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"{}",
    b"[]",
    b"null",
    b"true",
    b"false",
    b"\"\"",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":",
    // Numbers.
    b"0",
    b"-0",
    b"-1",
    b"1.5",
    b"1e999999",
    b"-1e-999999",
    b"1E+308",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"340282366920938463463374607431768211456",
    b"0.000000000000000000000000000000000000001",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"0x10",
    b"1_000",
    // JSON escapes, control characters, invalid and tricky UTF-8.
    b"\\",
    b"\\\"",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"\\ud83d\\ude00",
    b"\\u00e9",
    b"\x00",
    b"\t",
    b"\r\n",
    b"\n",
    b" ",
    b"\xff",
    b"\xfe\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    "\u{a0}".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{200b}".as_bytes(),
    "\u{130}".as_bytes(),  // lower-cases to two characters
    "\u{212a}".as_bytes(), // Kelvin sign, lower-cases to ASCII k
    "ß".as_bytes(),
    "é".as_bytes(),
    "😀".as_bytes(),
    // Event fields and their aliases.
    b"\"name\":",
    b"\"n\":\"pageview\"",
    b"\"url\":",
    b"\"u\":\"https://example.com/\"",
    b"\"domain\":",
    b"\"d\":\"example.com\"",
    b"\"d\":\"a.com,b.com,c.com\"",
    b"\"referrer\":",
    b"\"r\":\"https://google.com/\"",
    b"\"props\":",
    b"\"p\":{\"k\":\"v\"}",
    b"\"m\":\"{\\\"k\\\":1}\"",
    b"\"meta\":",
    b"\"revenue\":",
    b"\"$\":{\"currency\":\"usd\",\"amount\":\"1.5\"}",
    b"\"currency\":\"EUR\"",
    b"\"amount\":",
    b"\"interactive\":false",
    b"\"h\":true",
    b"\"hash\":1",
    b"\"e\":",
    b"\"sd\":101",
    b"\"sd\":-1",
    b"\"sd\":",
    // String contents (for replacing a string between its quotes).
    b"pageview",
    b"a.com,b.com,c.com",
    b" A.COM , ,b.com.",
    b"https://example.com/p?utm_source=x#h",
    b"usd",
    b"EURO",
    b"1.5e3",
    // URLs.
    b"http://",
    b"https://",
    b"HTTPS://",
    b"//",
    b"/",
    b"?",
    b"#",
    b"#/",
    b"&",
    b"=",
    b"@",
    b"user:pass@",
    b":0",
    b":65535",
    b":65536",
    b"[::1]",
    b"[2001:db8::1]",
    b"127.0.0.1",
    b"0x7f.1",
    b"999999999999",
    b"xn--",
    b"xn--nxasmq6b",
    b".",
    b"..",
    b"/../",
    b"%",
    b"%2e",
    b"%2E%2e/",
    b"%00",
    b"%ff",
    b"%c3%a9",
    b"utm_source=",
    b"utm_medium=cpc",
    b"utm_campaign=spring",
    b"utm_term=x&utm_content=y",
    b"ref=",
    b"source=",
    b"android-app://",
    b"android-app://com.google.android.gm",
    b"https://www.google.com/search?q=x",
    b"t.co",
    b"localhost",
    b"mail.example.com",
    // Spool segments and .ack files.
    b"HUSHSPL\x01",
    b"HUSHSPL\x02",
    b"hush-spool-ack 1\n",
    b"hush-spool-ack 2\n",
    b"acked ",
    b"acked 16\n",
    b"skip ",
    b"cut ",
    b"skip 0 18446744073709551615\n",
    b"cut 20 10\n",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\xff\xff\xff\x7f",
    b"\x01\x00\x00\x80",
];

/// Deterministic PRNG (SplitMix64): the same inputs on every run and platform, and
/// no dependency whose stream may change between versions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for fuzzing (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'\n', b'/',
    b'?', b'#', b'%', b'.', b'=', b'&', b' ',
];

/// Positions right after a structural byte: where a new value or field starts.
fn structural_positions(data: &[u8]) -> Vec<usize> {
    data.iter()
        .enumerate()
        .filter(|(_, b)| b"\"{[:,=/?#&\n".contains(b))
        .map(|(i, _)| i + 1)
        .collect()
}

/// A generated interesting value: deep nesting, a long number, a long repetition.
fn generated(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let open: &[u8] = if rng.chance(2) { b"[" } else { b"{\"a\":" };
            open.repeat(1 + rng.below(300))
        }
        1 => {
            let mut n = vec![b'9'; 1 + rng.below(400)];
            if rng.chance(2) {
                n.insert(0, b'-');
            }
            if rng.chance(2) {
                n.extend_from_slice(b"e-99999");
            }
            n
        }
        2 => {
            // Around the URL (16 KiB), UTM (200) and event limits.
            let len = *rng.pick(&[200, 201, 256, 1_000, 2_048, 16 * 1024, 16 * 1024 + 1]);
            vec![b'a'; len]
        }
        _ => rng.pick(TOKENS).repeat(2 + rng.below(64)),
    }
}

/// Applies one mutation to `data`; `pool` supplies splice partners.
fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(14) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.byte();
        }
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(INTERESTING_BYTES);
        }
        3 => {
            let i = rng.below(len + 1);
            let b = if rng.chance(2) {
                rng.byte()
            } else {
                *rng.pick(INTERESTING_BYTES)
            };
            data.insert(i, b);
        }
        4 if len > 0 => {
            data.remove(rng.below(len));
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            data.drain(start..end);
        }
        6 if len > 0 => {
            // Duplicate a chunk somewhere else (repeated fields, repeated records).
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            let chunk = data[start..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        7 => {
            // Splice: a prefix of this input, a suffix of another.
            let other = rng.pick(pool);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        8 => {
            let token = rng.pick(TOKENS);
            let at = rng.below(len + 1);
            data.splice(at..at, token.iter().copied());
        }
        9 => {
            // A token or generated value where a value or field starts.
            let positions = structural_positions(data);
            let at = if positions.is_empty() {
                rng.below(len + 1)
            } else {
                *rng.pick(&positions)
            };
            let value = if rng.chance(3) {
                generated(rng)
            } else {
                rng.pick(TOKENS).to_vec()
            };
            data.splice(at..at, value);
        }
        10 => {
            // Replace the contents of a string (between a quote and the next one).
            let quotes: Vec<usize> = (0..len).filter(|&i| data[i] == b'"').collect();
            if quotes.len() >= 2 {
                let q = rng.below(quotes.len() - 1);
                let (a, b) = (quotes[q] + 1, quotes[q + 1]);
                let value = if rng.chance(3) {
                    generated(rng)
                } else {
                    rng.pick(TOKENS).to_vec()
                };
                data.splice(a..b, value);
            }
        }
        11 if len >= 4 => {
            // Little-endian u32 arithmetic or boundary values (spool frame words,
            // lengths, CRCs).
            let i = rng.below(len - 3);
            let word = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            let word = match rng.below(3) {
                0 => word.wrapping_add(1 + rng.below(16) as u32),
                1 => word.wrapping_sub(1 + rng.below(16) as u32),
                _ => *rng.pick(&[0, 1, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, u32::MAX]),
            };
            data[i..i + 4].copy_from_slice(&word.to_le_bytes());
        }
        12 => data.truncate(rng.below(len + 1)),
        13 if len > 0 => {
            // The mode byte of the mode-prefixed targets.
            data[0] = rng.byte();
        }
        _ => data.push(rng.byte()),
    }
    data.truncate(MAX_INPUT);
}

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Runs one check; on a failure, panics with the input in hex and how to keep it.
fn run_one(target: &str, check: Check, input: &[u8], origin: &str) -> bool {
    match catch_unwind(AssertUnwindSafe(|| check(input))) {
        Ok(accepted) => accepted,
        Err(_) => {
            let hex = hex(input);
            panic!(
                "fuzz check `{target}` failed on {origin} ({} bytes; the check's own \
                 message is printed above).\ninput (hex): {hex}\n\
                 keep it as a regression seed:\n  \
                 echo {hex} | xxd -r -p > fuzz/seeds/{target}/regress-NAME",
                input.len()
            )
        }
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of a directory, sorted by name (a stable order for the mutation loop).
fn files(dir: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), data)
        })
        .collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// What one target's run exercised.
#[derive(Debug)]
struct Outcome {
    seeds_accepted: usize,
    accepted: usize,
    refused: usize,
}

fn fuzz_target(target: &str, check: Check) -> Outcome {
    let seeds = files(&fuzz_dir().join("seeds").join(target), "");
    assert!(
        !seeds.is_empty(),
        "no seeds in fuzz/seeds/{target}: the loop would only mutate nothing"
    );
    let mut seeds_accepted = 0;
    for (origin, data) in &seeds {
        seeds_accepted += usize::from(run_one(target, check, data, origin));
    }
    // libFuzzer's crash inputs (timeouts and out-of-memory inputs are left to
    // scripts/fuzz: a debug build could take minutes on them).
    for (origin, data) in files(&fuzz_dir().join("artifacts").join(target), "crash-") {
        run_one(target, check, &data, &origin);
    }

    let iters: usize = env_or("HUSH_FUZZ_ITERS", DEFAULT_ITERS);
    let seed: u64 = env_or("HUSH_FUZZ_SEED", DEFAULT_SEED);
    // Each target its own stream, so adding a target does not change the others'.
    let name_hash = target
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut rng = Rng(seed ^ name_hash);

    let mut pool: Vec<Vec<u8>> = seeds.into_iter().map(|(_, d)| d).collect();
    let n_seeds = pool.len();
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..iters {
        let mut input = rng.pick(&pool).clone();
        for _ in 0..1 + rng.below(4) {
            mutate_once(&mut rng, &mut input, &pool);
        }
        let origin = format!("mutation {i} (HUSH_FUZZ_SEED={seed})");
        if run_one(target, check, &input, &origin) {
            accepted += 1;
            // Accepted inputs are worth mutating further: they got past the parse.
            if pool.len() < n_seeds + POOL_SIZE {
                pool.push(input);
            } else {
                let slot = n_seeds + rng.below(POOL_SIZE);
                pool[slot] = input;
            }
        } else {
            refused += 1;
        }
    }
    let outcome = Outcome {
        seeds_accepted,
        accepted,
        refused,
    };
    eprintln!("{target}: {outcome:?} of {iters} mutations");
    // A loop that only ever hits one side of a parser checks little: the mutations
    // must reach both the accepted path (where most invariants are) and refusals.
    assert!(outcome.seeds_accepted > 0, "{target}: no seed accepted");
    assert!(
        outcome.accepted >= iters / 50 && outcome.refused >= iters / 50,
        "{target}: mutations stay on one side: {outcome:?}"
    );
    outcome
}

#[test]
fn parse_event() {
    fuzz_target("parse_event", checks::parse_event);
}

#[test]
fn parse_batch() {
    fuzz_target("parse_batch", checks::parse_batch);
}

#[test]
fn page_url() {
    fuzz_target("page_url", checks::page_url);
}

#[test]
fn referrer() {
    fuzz_target("referrer", checks::referrer);
}

#[test]
fn spool_decode() {
    fuzz_target("spool_decode", checks::spool_decode);
}

/// The mutations reach what they are for: the same seed gives the same inputs, and
/// the loop produces invalid UTF-8, deep nesting and inputs above the URL limit.
#[test]
fn mutations_are_deterministic_and_reach_the_interesting_values() {
    let pool = vec![br#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#.to_vec()];
    let run = |seed| {
        let mut rng = Rng(seed);
        (0..5_000)
            .map(|_| {
                let mut input = pool[0].clone();
                for _ in 0..1 + rng.below(4) {
                    mutate_once(&mut rng, &mut input, &pool);
                }
                input
            })
            .collect::<Vec<_>>()
    };
    let a = run(1);
    assert_eq!(a, run(1), "same seed, different inputs");
    assert_ne!(a, run(2), "the seed does not vary the inputs");
    assert!(
        a.iter().any(|i| std::str::from_utf8(i).is_err()),
        "no invalid UTF-8"
    );
    assert!(
        a.iter()
            .any(|i| i.windows(64).any(|w| w.iter().all(|&b| b == b'['))),
        "no deep nesting"
    );
    assert!(
        a.iter().any(|i| i.len() > 16 * 1024),
        "nothing above the URL limit"
    );
    assert!(a.iter().all(|i| i.len() <= MAX_INPUT));
}
