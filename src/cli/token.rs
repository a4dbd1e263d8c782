//! `hush token new`: a new admin token, printed once with its config entry.

use crate::token::NewToken;

/// `hush token ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Generate an admin token: prints it once, and the config entry holding its hash.
    New {
        /// Name logged with every call made with this token.
        #[arg(long)]
        name: String,
    },
}

/// Runs `hush token ...`.
pub(super) fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::New { name } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let token = NewToken::generate(&name);
            println!("token (shown once, keep it secret): {}", token.secret);
            println!();
            println!("add to the configuration:");
            print!("{}", token.config_snippet());
            Ok(())
        }
    }
}
