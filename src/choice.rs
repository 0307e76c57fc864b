//! A name typed on a command line or in a query that is not one of the choices (a backend, a
//! storage dtype, a residency, a dense method): what was asked for, what was found, what is
//! expected.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{found}': expected {expected}")]
pub struct UnknownChoice {
    pub what: &'static str,
    pub found: String,
    pub expected: &'static str,
}

impl UnknownChoice {
    pub fn new(what: &'static str, found: &str, expected: &'static str) -> Self {
        Self { what, found: found.to_string(), expected }
    }
}
