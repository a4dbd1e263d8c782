//! `hush key new`: a new Stats API key, printed once with its config entry.

use crate::config::ALL_SITES;
use crate::token::NewToken;

/// `hush key ...`.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Generate a Stats API key: prints it once, and the `[[stats.keys]]` entry
    /// holding its hash and the sites it may read.
    New {
        /// Name logged with every call made with this key.
        #[arg(long)]
        name: String,
        /// Domains of the sites it may read, comma-separated, or `*` for every site.
        #[arg(long, value_delimiter = ',', required = true)]
        sites: Vec<String>,
    },
}

/// Runs `hush key ...`.
pub(super) fn run(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::New { name, sites } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let sites = sites_of(sites)?;
            let key = NewToken::generate(&name);
            println!("stats API key (shown once, keep it secret): {}", key.secret);
            println!();
            println!("add to the configuration:");
            print!("{}", key.stats_key_snippet(&sites));
            Ok(())
        }
    }
}

/// `--sites` checked for what the configuration will require of it: at least one
/// entry, lower-case host names or `*` alone, none twice. (Whether each is a
/// configured site is checked when the configuration is loaded.)
pub(super) fn sites_of(sites: Vec<String>) -> anyhow::Result<Vec<String>> {
    let sites: Vec<String> = sites.into_iter().map(|s| s.trim().to_owned()).collect();
    anyhow::ensure!(
        !sites.is_empty() && sites.iter().all(|s| !s.is_empty()),
        "--sites needs site domains (a.com,b.com) or '*'"
    );
    if sites.iter().any(|s| s == ALL_SITES) {
        anyhow::ensure!(
            sites.len() == 1,
            "--sites: '*' (every site) must be the only entry"
        );
        return Ok(sites);
    }
    for (i, site) in sites.iter().enumerate() {
        anyhow::ensure!(
            site.len() <= 253
                && site.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'.'),
            "--sites: {site:?} is not a lower-case domain"
        );
        anyhow::ensure!(
            !sites[..i].contains(site),
            "--sites: {site:?} is listed twice"
        );
    }
    Ok(sites)
}
