//! The hidden `completions` and `man` commands both binaries carry, which
//! `scripts/package` runs to put shell completions and man pages into the packages.

use clap::CommandFactory;
use std::io::Write;

/// `completions SHELL` and `man`, flattened into a binary's own subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Generate {
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(hide = true)]
    Man,
}

impl Generate {
    /// Writes what was asked for about the command line `C` (named `bin`) to `out`.
    pub fn write<C: CommandFactory>(&self, bin: &str, out: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Generate::Completions { shell } => {
                clap_complete::generate(*shell, &mut C::command(), bin, out);
                Ok(())
            }
            Generate::Man => clap_mangen::Man::new(C::command()).render(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in command line.
    #[derive(clap::Parser)]
    #[command(name = "gapferry-demo")]
    struct Demo {
        #[command(subcommand)]
        command: Generate,
    }

    fn render(g: Generate) -> String {
        let mut out = Vec::new();
        g.write::<Demo>("gapferry-demo", &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn man_page_and_completions_name_the_binary() {
        let man = render(Generate::Man);
        assert!(
            man.contains(".TH") && man.contains("gapferry\\-demo"),
            "{man}"
        );
        let bash = render(Generate::Completions {
            shell: clap_complete::Shell::Bash,
        });
        assert!(bash.contains("complete -F _gapferry__demo"), "{bash}");
    }

    #[test]
    fn both_commands_parse_from_the_command_line() {
        use clap::Parser;
        let d = Demo::try_parse_from(["gapferry-demo", "completions", "zsh"]).unwrap();
        assert!(matches!(
            d.command,
            Generate::Completions {
                shell: clap_complete::Shell::Zsh
            }
        ));
        assert!(Demo::try_parse_from(["gapferry-demo", "completions", "tcsh"]).is_err());
    }
}
