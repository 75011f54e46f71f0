//! A cache of the JSON text of a value's fields that never change (an
//! inbox item's id, title, body and time), so re-serialising a document
//! whose items did not change copies them instead of escaping them again.

use std::sync::OnceLock;

/// The JSON text of a value's fields that never change, written on first
/// use and kept (see [`InboxItem`]). Derived data: it compares equal
/// whatever it holds, is not serialised, and starts empty.
#[derive(Clone, Default)]
pub(crate) struct JsonHead(OnceLock<Vec<u8>>);

impl JsonHead {
    /// The text, written by `init` on first use.
    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> Vec<u8>) -> &[u8] {
        self.0.get_or_init(init)
    }
}

impl PartialEq for JsonHead {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JsonHead {}

impl std::fmt::Debug for JsonHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonHead")
    }
}
