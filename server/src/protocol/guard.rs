//! The one guard around yrs calls on bytes the server did not make (client frames,
//! stream entries other writers appended, stored items): yrs may panic on crafted
//! input, and one bad document must never take the process down. The guard relies
//! on unwinding; the workspace `Cargo.toml` says why `panic = "abort"` must not be
//! set.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run `f`, a yrs call that may fail or panic; both come back as the error text
/// (`"{what} panicked"` for a panic).
pub fn guard_yrs<T, E: Display>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("{what} panicked")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_panics_are_errors() {
        assert_eq!(guard_yrs("x", || Ok::<_, String>(1)), Ok(1));
        assert_eq!(
            guard_yrs("x", || Err::<(), _>("bad")),
            Err("bad".to_string())
        );
        let panicked = guard_yrs("merging", || -> Result<(), String> { panic!("boom") });
        assert_eq!(panicked, Err("merging panicked".to_string()));
    }
}
