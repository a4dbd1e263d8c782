//! `hush user add` and `hush share new`: analyst accounts and shared links, printed as
//! the configuration entries that create them. Passwords are asked for twice on the
//! terminal (not echoed), or read from stdin with `--password-stdin`.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};

use crate::app::auth::{self, MIN_PASSWORD_CHARS, NewShare, toml_string};

/// `hush user ...`.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create an analyst account: asks for the password and prints the `[[users]]`
    /// entry with its Argon2id hash.
    Add {
        /// The login name.
        name: String,
        /// Domains of the sites the user may read, comma-separated, or `*` for every site.
        #[arg(long, value_delimiter = ',', required = true)]
        sites: Vec<String>,
        /// Read the password from stdin (its first line) instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `hush share ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ShareCommand {
    /// Create a shared link to one site: prints the link once and the
    /// `[[sites.shares]]` entry (removing that entry revokes the link).
    New {
        /// The site's domain.
        #[arg(long)]
        site: String,
        /// Name logged with each request made through the link.
        #[arg(long)]
        name: Option<String>,
        /// Protect the link with a password (asked for on the terminal).
        #[arg(long)]
        password: bool,
        /// Read the link's password from stdin (implies --password).
        #[arg(long)]
        password_stdin: bool,
        /// Stats API v2 filters, as a JSON array, locked onto every query made through
        /// the link, e.g. '[["is", "event:page", ["/pricing"]]]'.
        #[arg(long)]
        filter: Option<String>,
    },
}

/// Runs `hush user ...`.
pub(super) fn run_user(command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Add {
        name,
        sites,
        password_stdin,
    } = command;
    anyhow::ensure!(
        !name.is_empty()
            && name.trim() == name
            && name.chars().count() <= 100
            && !name.chars().any(char::is_control),
        "NAME must be 1 to 100 characters, no control characters, no surrounding spaces"
    );
    let sites = super::key::sites_of(sites)?;
    let password = password(password_stdin)?;
    let hash = auth::hash_password(&password)?;
    let sites: Vec<String> = sites.iter().map(|s| toml_string(s)).collect();
    println!("add to the configuration:");
    print!(
        "[[users]]\nname = {}\npassword_hash = {}\nsites = [{}]\n",
        toml_string(&name),
        toml_string(&hash),
        sites.join(", ")
    );
    Ok(())
}

/// Runs `hush share ...`.
pub(super) fn run_share(command: ShareCommand) -> anyhow::Result<()> {
    let ShareCommand::New {
        site,
        name,
        password,
        password_stdin,
        filter,
    } = command;
    let site = super::key::sites_of(vec![site])?
        .pop()
        .filter(|s| s != crate::config::ALL_SITES)
        .ok_or_else(|| anyhow::anyhow!("--site must name one site"))?;
    let filters = match &filter {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("--filter is not JSON: {e}"))?;
            anyhow::ensure!(
                value.as_array().is_some_and(|a| !a.is_empty()),
                "--filter must be a non-empty JSON array of filters"
            );
            auth::parse_locked_filters(&value).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
            Some(value.to_string())
        }
        None => None,
    };
    let hash = if password || password_stdin {
        Some(auth::hash_password(&self::password(password_stdin)?)?)
    } else {
        None
    };
    let share = NewShare::generate();
    let name = name.unwrap_or_else(|| format!("link {}", &share.slug_sha256[..8]));
    anyhow::ensure!(
        !name.trim().is_empty() && !name.chars().any(char::is_control),
        "--name must be non-empty, no control characters"
    );
    println!(
        "shared link (shown once; append it to hush's address): /share/{site}?auth={}",
        share.slug
    );
    println!();
    println!("add to the configuration, under the [[sites]] entry of {site}:");
    println!("[[sites.shares]]");
    println!("name = {}", toml_string(&name));
    println!("slug_sha256 = \"{}\"", share.slug_sha256);
    if let Some(hash) = hash {
        println!("password_hash = {}", toml_string(&hash));
    }
    if let Some(filters) = filters {
        println!("filters = {}", toml_string(&filters));
    }
    Ok(())
}

/// The password: from stdin's first line, or asked twice on the terminal.
fn password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .take(64 * 1024)
            .read_to_string(&mut text)?;
        text.lines().next().unwrap_or("").to_owned()
    } else {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "no terminal to ask for the password: pass --password-stdin and pipe it in"
        );
        let first = prompt("Password: ")?;
        let second = prompt("Again: ")?;
        anyhow::ensure!(first == second, "the two passwords differ");
        first
    };
    anyhow::ensure!(
        password.chars().count() >= MIN_PASSWORD_CHARS,
        "the password must have at least {MIN_PASSWORD_CHARS} characters"
    );
    Ok(password)
}

/// One line from the terminal with echo off.
fn prompt(label: &str) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr();
    stderr.write_all(label.as_bytes())?;
    stderr.flush()?;
    let echo = EchoOff::new();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    drop(echo);
    stderr.write_all(b"\n")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Terminal echo off on stdin while it lives.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Self(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Self(None);
            }
            Self(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}
