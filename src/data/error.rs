//! The data room's errors: a world's settings out of range, or a style its atlas lacks. The
//! emoji atlas has its own (`emoji::atlas::AtlasError`), the VOC layout too (`voc::VocError`).

/// A world's settings (`SceneConfig`, `EmojiConfig`) that cannot draw scenes; each names the
/// field at fault.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DataError {
    /// A setting outside its range.
    #[error("{field} {found} must be {expected}")]
    BadValue { field: &'static str, found: String, expected: String },
    /// An art style the emoji atlas does not have.
    #[error("style '{style}' is not in the emoji atlas (it has: {available})")]
    UnknownStyle { style: String, available: String },
}

impl DataError {
    pub(crate) fn bad_value(field: &'static str, found: impl ToString, expected: impl Into<String>) -> Self {
        DataError::BadValue { field, found: found.to_string(), expected: expected.into() }
    }
}
