//! The shell both binaries (`gapferry-send`, `gapferry-recv`) wrap around their work: the
//! TOML configuration loader ([`config`]), the log setup and its flags ([`logging`]), the
//! pre-shared key files ([`keys`]) and the hidden `completions`/`man` commands
//! ([`generate`]). Each binary keeps its own configuration structs and commands.
#![warn(missing_docs)]

pub mod config;
pub mod generate;
pub mod keys;
pub mod logging;

pub use config::ConfigError;
pub use generate::Generate;
pub use logging::{LogArgs, LogFormat};
