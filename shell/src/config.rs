//! Loading a binary's TOML configuration file into its own `FileConfig` type, with the
//! messages an operator sees when the file cannot be read or parsed.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why the configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
}

/// Reads `path` and parses it as `T` (whose `deny_unknown_fields` names a mistyped key).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// For `#[serde(default, deserialize_with = "...")]`: a key given as one string or as a list
/// of strings (one per lane), kept as one comma-separated string.
pub fn one_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrList {
        One(String),
        List(Vec<String>),
    }
    Ok(Some(match serde::Deserialize::deserialize(d)? {
        OneOrList::One(s) => s,
        OneOrList::List(v) => v.join(","),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        to: String,
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let e = load::<Sample>(Path::new("/nonexistent/gapferry.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/gapferry.toml"), "{e}");
    }

    #[test]
    fn a_mistyped_key_and_broken_toml_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "to = \"a\"\n").unwrap();
        assert_eq!(load::<Sample>(&p).unwrap().to, "a");
        std::fs::write(&p, "to = \"a\"\ntoo = 1\n").unwrap();
        let e = load::<Sample>(&p).unwrap_err();
        assert!(
            matches!(e, ConfigError::Parse { .. }) && e.to_string().contains("too"),
            "{e}"
        );
        std::fs::write(&p, "to = [\n").unwrap();
        assert!(matches!(load::<Sample>(&p), Err(ConfigError::Parse { .. })));
    }
}
