//! The rules an object's relative name must follow before anything is written under it.

use thiserror::Error;

/// Longest name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most path components accepted in a name.
pub const MAX_NAME_DEPTH: usize = 32;
/// Longest single path component accepted, in bytes (the common filesystem limit).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The name is empty.
    #[error("empty name")]
    Empty,
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error("name is {0} bytes long, more than allowed")]
    TooLong(usize),
    /// The name has more than [`MAX_NAME_DEPTH`] components.
    #[error("name has {0} path components, more than allowed")]
    TooDeep(usize),
    /// The name starts with `/`.
    #[error("absolute name")]
    Absolute,
    /// A component is empty, `.` or `..`.
    #[error("name has an empty, '.' or '..' component")]
    BadComponent,
    /// A component is longer than [`MAX_COMPONENT_BYTES`].
    #[error("a name component is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
    /// The name holds a control character or a backslash.
    #[error("name holds a control character or a backslash")]
    BadCharacter,
}

/// Checks that `name` is a safe relative path made of `/`-separated components.
///
/// Safe means: joined under a delivery directory it can only name a path inside it.
pub fn validate(name: &str) -> Result<(), NameError> {
    validate_within(name, MAX_NAME_BYTES, MAX_NAME_DEPTH)
}

/// [`validate`] with tighter bounds on length and depth (never looser than the defaults).
pub fn validate_within(name: &str, max_bytes: usize, max_depth: usize) -> Result<(), NameError> {
    let (max_bytes, max_depth) = (max_bytes.min(MAX_NAME_BYTES), max_depth.min(MAX_NAME_DEPTH));
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_bytes {
        return Err(NameError::TooLong(name.len()));
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute);
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(NameError::BadCharacter);
    }
    let mut depth = 0;
    for component in name.split('/') {
        depth += 1;
        if component.is_empty() || component == "." || component == ".." {
            return Err(NameError::BadComponent);
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(NameError::ComponentTooLong);
        }
    }
    if depth > max_depth {
        return Err(NameError::TooDeep(depth));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_names() {
        assert_eq!(validate("a.json"), Ok(()));
        assert_eq!(validate("dir/sub/file.tar.gz"), Ok(()));
        assert_eq!(validate("..hidden/x..y"), Ok(()));
    }

    #[test]
    fn refuses_escapes_and_oddities() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert_eq!(validate("/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(validate("../x"), Err(NameError::BadComponent));
        assert_eq!(validate("a/../../x"), Err(NameError::BadComponent));
        assert_eq!(validate("a//b"), Err(NameError::BadComponent));
        assert_eq!(validate("a/./b"), Err(NameError::BadComponent));
        assert_eq!(validate("a/"), Err(NameError::BadComponent));
        assert_eq!(validate("a\nb"), Err(NameError::BadCharacter));
        assert_eq!(validate("a\\..\\b"), Err(NameError::BadCharacter));
        assert_eq!(validate("a\0b"), Err(NameError::BadCharacter));
        assert!(matches!(
            validate(&"x".repeat(2000)),
            Err(NameError::TooLong(_))
        ));
        assert_eq!(validate(&"y".repeat(256)), Err(NameError::ComponentTooLong));
        assert!(matches!(
            validate(&["d"; 40].join("/")),
            Err(NameError::TooDeep(40))
        ));
        assert_eq!(
            validate_within("a/b/c", 1024, 2),
            Err(NameError::TooDeep(3))
        );
        assert_eq!(validate_within("abcdef", 4, 32), Err(NameError::TooLong(6)));
        // Configured limits only tighten the defaults.
        assert!(matches!(
            validate_within(&["d"; 40].join("/"), 9999, 9999),
            Err(NameError::TooDeep(40))
        ));
    }
}
