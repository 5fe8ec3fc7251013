//! Shared by the property-test groups: a proptest runner with a fixed case count
//! and a seed that is printed, so every failure can be replayed exactly.
#![allow(dead_code)]

use std::hash::{BuildHasher, Hasher};

use conformance::EditOp;
use proptest::prelude::*;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{json, Value};

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

/// A JSON value for maps and arrays: integers, doubles, strings, booleans, null.
pub fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "[a-zé ]{0,6}".prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

/// One random edit of the fixed document shape.
pub fn op() -> impl Strategy<Value = EditOp> {
    let key = "k[0-3]";
    prop_oneof![
        3 => (0u32..24, "[a-z ]{1,6}").prop_map(|(index, text)| EditOp::TextInsert { index, text }),
        1 => (0u32..24, 1u32..6).prop_map(|(index, len)| EditOp::TextDelete { index, len }),
        2 => (key, value()).prop_map(|(key, value)| EditOp::MapSet { key, value }),
        1 => key.prop_map(|key| EditOp::MapDelete { key }),
        2 => (0u32..8, prop::collection::vec(value(), 1..3))
            .prop_map(|(index, values)| EditOp::ArrayInsert { index, values }),
        1 => (0u32..8, 1u32..3).prop_map(|(index, len)| EditOp::ArrayDelete { index, len }),
    ]
}
