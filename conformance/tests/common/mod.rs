//! Shared by the property-test groups: a proptest runner with a fixed case count
//! and a seed that is printed, so every failure can be replayed exactly.
#![allow(dead_code)]

use std::hash::{BuildHasher, Hasher};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// The environment variable that replays a run: `CONFORMANCE_SEED=<seed>`.
pub const SEED_VAR: &str = "CONFORMANCE_SEED";

/// The seed of this run: `CONFORMANCE_SEED` if set, else a fresh random one.
fn seed() -> u64 {
    if let Some(seed) = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return seed;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

/// Run `test` on `cases` values of `strategy`. The seed is printed first (shown
/// with a failing test's output) and again in the failure, with the shrunk input.
/// Shrinking stops after `max_shrink_iters` steps, since cases may be slow.
pub fn check<S: Strategy>(
    name: &str,
    cases: u32,
    max_shrink_iters: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let seed = seed();
    println!("{name}: {cases} cases, seed {seed} (replay with {SEED_VAR}={seed})");
    let config = Config {
        cases,
        max_shrink_iters,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(err) = runner.run(&strategy, test) {
        panic!("{name} failed with seed {seed} (replay with {SEED_VAR}={seed}): {err}");
    }
}

/// Turn any error into a test-case failure with its whole chain.
pub fn fail(err: anyhow::Error) -> TestCaseError {
    TestCaseError::fail(format!("{err:#}"))
}
