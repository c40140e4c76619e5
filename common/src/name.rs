//! The rules an object's relative name must follow before anything is written under it,
//! and the escaping that makes any text from a sender safe to show on a terminal or in a log.

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
    /// The name holds an invisible formatting character (bidi control, zero-width
    /// character, byte-order mark, line separator...) that would make it read as
    /// something else.
    #[error("name holds the invisible formatting character U+{0:04X} (bidi control, zero-width or similar), which would make it display as another name")]
    InvisibleCharacter(u32),
}

/// True for characters that change how text around them displays without showing
/// themselves: Unicode general category Cf (bidi embeddings, overrides and isolates,
/// zero-width characters, the byte-order mark, invisible operators, tags...) and the line
/// and paragraph separators.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// `text` with control characters, invisible formatting characters and backslashes
/// written as escapes (`\u{1b}`, `\u{202e}`, `\\`), so a name or reason from a sender
/// cannot drive a terminal or disguise itself when printed or logged.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || c == '\\' || is_invisible_format(c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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
    if let Some(c) = name.chars().find(|&c| is_invisible_format(c)) {
        return Err(NameError::InvisibleCharacter(c as u32));
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
        assert_eq!(validate("a\u{1b}[2Jb"), Err(NameError::BadCharacter));
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

    #[test]
    fn refuses_bidi_controls_and_invisible_characters() {
        // "invoice_\u{202e}fdp.exe" displays as "invoice_exe.pdf".
        assert_eq!(
            validate("invoice_\u{202e}fdp.exe"),
            Err(NameError::InvisibleCharacter(0x202E))
        );
        assert_eq!(
            validate("dir/a\u{200b}b.json"),
            Err(NameError::InvisibleCharacter(0x200B))
        );
        assert_eq!(
            validate("\u{feff}event.json"),
            Err(NameError::InvisibleCharacter(0xFEFF))
        );
        for c in [
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{2066}',
            '\u{2069}',
            '\u{2060}',
            '\u{2064}',
            '\u{2028}',
            '\u{e0041}',
            '\u{00ad}',
        ] {
            assert_eq!(
                validate(&format!("a{c}b")),
                Err(NameError::InvisibleCharacter(c as u32)),
                "U+{:04X}",
                c as u32
            );
        }
        // Visible non-ASCII letters and symbols stay allowed.
        assert_eq!(validate("rapport-été/日本語 — ok.json"), Ok(()));
        let e = validate("x\u{202e}y").unwrap_err().to_string();
        assert!(e.contains("U+202E"), "{e}");
    }

    #[test]
    fn escape_neutralises_terminal_sequences_and_invisible_characters() {
        assert_eq!(escape("plain/ü.json"), "plain/ü.json");
        assert!(matches!(escape("plain"), std::borrow::Cow::Borrowed(_)));
        let shown = escape("a\u{1b}]0;owned\u{7}\u{1b}[2Jb\u{202e}c\\d\ne");
        assert_eq!(
            shown,
            "a\\u{1b}]0;owned\\u{7}\\u{1b}[2Jb\\u{202e}c\\\\d\\u{a}e"
        );
        assert!(!shown
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c)));
    }
}
