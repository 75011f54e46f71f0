//! [`Secret`]: a value that must never be printed (admin keys, passwords,
//! database URLs with a password in them).
//!
//! Its own module because both the configuration and the connection-string
//! parser (`source::conninfo`) hold secrets, and the configuration calls the
//! parser: the type sits below both so neither depends on the other for it.

use std::fmt;

use serde::Deserialize;

/// A value that must never be printed. `Debug` and `Display` show
/// `<redacted>`; [`Secret::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The only way to read the secret; call it where the value leaves the
    /// process (an HTTP header, an auth message), nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Lets clap parse a flag or environment variable straight into a `Secret`,
/// so the parsed arguments never hold the plain string.
impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_display_shows_the_value() {
        let s = Secret::new("hunter2");
        let shown = format!("{s:?} {s} {:?}", Some(&s));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.expose(), "hunter2");
    }
}
