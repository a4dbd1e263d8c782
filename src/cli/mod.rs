//! The `hush` command line. Each subcommand is a variant of [`Command`] and one match
//! arm in [`run`] calling into its module, so adding one is a two-place edit.
//!
//! Exit codes: 0 success, 1 runtime or configuration error (the message names the
//! key, value and reason), 2 usage error (clap).

mod demo;
mod dsr;
mod key;
mod purge;
mod sessions;
mod token;
mod user;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "hush",
    version,
    about = "A privacy-respecting web analytics collector"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `hush sessions ...`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Build every due day of each site now (as `serve` does on its schedule).
    Build(sessions::BuildArgs),
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector: migrate, then accept hits until SIGTERM/SIGINT.
    Serve(ServeArgs),
    /// Create the database and apply pending schema migrations, then exit.
    Migrate(ConfigArgs),
    /// Validate a configuration and print the effective values (secrets redacted).
    CheckConfig(ConfigArgs),
    /// Print the version.
    Version,
    /// Delete rows past each site's retention (for cron; `serve` also runs it daily).
    Purge(purge::PurgeArgs),
    /// Export the rows a data-subject selector matches to stdout (JSON lines or CSV).
    Export(dsr::ExportArgs),
    /// Delete the rows a data-subject selector matches.
    Erase(dsr::SelectorArgs),
    /// Admin API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Stats API keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Write realistic demo traffic for a site straight into ClickHouse.
    Demo(demo::DemoArgs),
    /// Dashboard users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// The finished visits visit queries read (`sessions`).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Shared links to a site's dashboard.
    #[command(subcommand)]
    Share(user::ShareCommand),
    /// Site data.
    #[command(subcommand)]
    Site(dsr::SiteCommand),
    /// The disk spool.
    #[command(subcommand)]
    Spool(SpoolCommand),
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Segments, bytes, pending hits, oldest hit age, replay progress and dead letters.
    /// Reads the files only, so it works while `hush serve` runs.
    Status(SpoolStatusArgs),
}

#[derive(Debug, Args)]
pub struct SpoolStatusArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Spool directory, overriding `spool.dir`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). `HUSH_*` environment variables override it.
    #[arg(long, short = 'c', env = "HUSH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Listen address, overriding `server.listen` (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Write the bound `ip:port` to this file once listening (for supervisors and tests).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Write the admin listener's bound `ip:port` to this file (before `--port-file`).
    #[arg(long)]
    pub admin_port_file: Option<PathBuf>,
    /// Write the dashboard listener's bound `ip:port` to this file (with
    /// `dashboard.listen`; before `--port-file`).
    #[arg(long)]
    pub dashboard_port_file: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> anyhow::Result<Config> {
        let config = Config::load(self.config.as_deref())?;
        Ok(config)
    }
}

/// Parses the process arguments and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("hush: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let mut config = args.config.load()?;
            if let Some(listen) = args.listen {
                config.server.listen = listen;
            }
            crate::logging::init(&config.log)?;
            let port_files = crate::app::PortFiles {
                ingest: args.port_file,
                admin: args.admin_port_file,
                dashboard: args.dashboard_port_file,
            };
            runtime()?.block_on(crate::app::serve(config, port_files))
        }
        Command::Migrate(args) => {
            let config = args.load()?;
            crate::logging::init(&config.log)?;
            runtime()?.block_on(async {
                let applied = crate::store::migrate::run(&config.clickhouse)
                    .await
                    .context("migration failed")?;
                if applied.is_empty() {
                    println!("schema is up to date");
                } else {
                    for name in applied {
                        println!("applied {name}");
                    }
                }
                Ok(())
            })
        }
        Command::CheckConfig(args) => {
            let config = args.load()?;
            crate::app::auth::check_shares(&config)?;
            print!("{}", effective_config(&config)?);
            Ok(())
        }
        Command::Version => {
            println!("hush {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Purge(args) => runtime()?.block_on(purge::run(args)),
        Command::Sessions(SessionsCommand::Build(args)) => {
            runtime()?.block_on(sessions::build(args))
        }
        Command::Export(args) => runtime()?.block_on(dsr::export(args)),
        Command::Erase(args) => runtime()?.block_on(dsr::erase(args)),
        Command::Token(command) => token::run(command),
        Command::Key(command) => key::run(command),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::User(command) => user::run_user(command),
        Command::Share(command) => user::run_share(command),
        Command::Site(command) => runtime()?.block_on(dsr::site(command)),
        Command::Spool(SpoolCommand::Status(args)) => {
            print!("{}", spool_status(&args)?);
            Ok(())
        }
    }
}

/// `hush spool status`: the report for the configured (or given) spool directory.
pub fn spool_status(args: &SpoolStatusArgs) -> anyhow::Result<String> {
    let config = args.config.load()?;
    let dir = args
        .dir
        .clone()
        .or(config.spool.dir.clone())
        .context("no spool directory: set spool.dir or pass --dir")?;
    let status = crate::pipeline::spool::Spool::inspect(&dir)
        .with_context(|| format!("cannot read the spool in {}", dir.display()))?;
    let (quarantined, dead_letters) = quarantine_counts(&dir.join("quarantine"));
    let age = status.oldest_pending_age.map(|d| d.as_secs());
    if args.json {
        let value = serde_json::json!({
            "dir": dir.display().to_string(),
            "segments": status.segments,
            "bytes": status.bytes,
            "max_bytes": config.spool.max_bytes,
            "pending_records": status.pending_records,
            "oldest_pending_age_secs": age,
            "unacknowledged_batches": status.replay_batches,
            "quarantined_files": quarantined,
            "dead_letter_batches": dead_letters,
        });
        return Ok(format!("{value}\n"));
    }
    let age = age.map_or_else(|| "-".to_owned(), |s| format!("{s} s (upper bound)"));
    Ok(format!(
        "spool:                  {dir}\n\
         segments:               {segments}\n\
         bytes:                  {bytes} of {max} ({percent:.1}%)\n\
         pending hits:           {pending}\n\
         oldest pending hit:     {age}\n\
         replay:                 {replay} batches handed out and not yet acknowledged \
         (re-inserted first after a restart)\n\
         quarantined regions:    {quarantined}\n\
         dead-letter batches:    {dead_letters}\n",
        dir = dir.display(),
        segments = status.segments,
        bytes = status.bytes,
        max = config.spool.max_bytes,
        percent = status.bytes as f64 * 100.0 / config.spool.max_bytes.max(1) as f64,
        pending = status.pending_records,
        replay = status.replay_batches,
    ))
}

/// Files in `quarantine/`: corrupt regions cut out at recovery, and batches
/// ClickHouse refused (`dead-letter-*.rowbinary`).
fn quarantine_counts(dir: &std::path::Path) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut counts = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("dead-letter-") && name.ends_with(".rowbinary") {
            counts.1 += 1;
        } else if name.ends_with(".bad") {
            counts.0 += 1;
        }
    }
    counts
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hush")
        .build()
        .context("cannot start the async runtime")
}

/// The configuration as TOML, with secrets replaced (also credentials inside
/// `clickhouse.url`).
pub fn effective_config(config: &Config) -> anyhow::Result<String> {
    let mut shown = config.clone();
    if !shown.clickhouse.password.is_empty() {
        shown.clickhouse.password = crate::config::REDACTED.into();
    }
    shown.clickhouse.url = crate::config::redact_url(&shown.clickhouse.url);
    for token in &mut shown.admin.tokens {
        token.sha256 = crate::config::REDACTED.into();
    }
    for key in &mut shown.stats.keys {
        key.sha256 = crate::config::REDACTED.into();
    }
    for user in &mut shown.users {
        user.password_hash = crate::config::REDACTED.into();
    }
    for share in shown.sites.iter_mut().flat_map(|s| s.shares.iter_mut()) {
        share.slug_sha256 = crate::config::REDACTED.into();
        if share.password_hash.is_some() {
            share.password_hash = Some(crate::config::REDACTED.into());
        }
    }
    toml::to_string_pretty(&shown).context("cannot render the configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config/default.toml` documents the defaults; it must not drift from the code.
    #[test]
    fn default_toml_equals_built_in_defaults() {
        let text = include_str!("../../config/default.toml");
        let parsed = Config::from_toml_str(text).expect("config/default.toml parses");
        assert!(parsed.sites.is_empty());
        let as_json = |c: &Config| serde_json::to_value(c).expect("config serializes");
        assert_eq!(as_json(&parsed), as_json(&Config::default()));
        // Every section of the struct is present in the file (documented), not just
        // defaulted by omission.
        let table: toml::Table = text.parse().expect("valid TOML");
        let serde_json::Value::Object(sections) = as_json(&Config::default()) else {
            panic!("config is not an object");
        };
        for (section, fields) in sections {
            if section == "sites" || section == "users" {
                continue;
            }
            let Some(toml::Value::Table(in_file)) = table.get(&section) else {
                panic!("section [{section}] missing from config/default.toml");
            };
            if let serde_json::Value::Object(fields) = fields {
                for (key, value) in fields {
                    assert!(
                        in_file.contains_key(&key)
                            || (value.is_null() && text.contains(&format!("# {key} = "))),
                        "{section}.{key} is not documented in config/default.toml"
                    );
                }
            }
        }
    }

    #[test]
    fn shipped_configs_are_valid() {
        for text in [
            include_str!("../../config/hush.toml"),
            include_str!("../../config/production.example.toml"),
        ] {
            let config = Config::from_toml_str(text).expect("shipped config parses");
            assert!(!config.sites.is_empty());
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.clickhouse.password = "hunter2-secret".into();
        config.clickhouse.url =
            "https://alice:url-secret@ch.example.com:8443/?password=query-secret".into();
        config.admin.tokens.push(crate::config::AdminToken {
            name: "ops".into(),
            sha256: "ab".repeat(32),
        });
        config.stats.keys.push(crate::config::StatsKey {
            name: "grafana".into(),
            sha256: "cd".repeat(32),
            sites: vec!["*".into()],
        });
        config.users.push(crate::config::UserConfig {
            name: "carol".into(),
            password_hash: "$argon2id$v=19$m=64,t=1,p=1$user-hash-secret".into(),
            sites: vec!["*".into()],
        });
        let mut site = Config::from_toml_str("[[sites]]\ndomain = \"a.com\"\n")
            .unwrap()
            .sites
            .remove(0);
        site.shares.push(crate::config::ShareConfig {
            name: "press".into(),
            slug_sha256: "ef".repeat(32),
            password_hash: Some("$argon2id$v=19$m=64,t=1,p=1$share-hash-secret".into()),
            filters: None,
        });
        config.sites.push(site);
        let out = effective_config(&config).unwrap();
        assert!(
            !out.contains("user-hash-secret") && !out.contains("share-hash-secret"),
            "{out}"
        );
        assert!(!out.contains(&"ef".repeat(32)), "{out}");
        assert!(
            out.contains("name = \"press\"") && out.contains("name = \"carol\""),
            "{out}"
        );
        assert!(!out.contains("hunter2-secret"), "{out}");
        assert!(!out.contains(&"ab".repeat(32)), "{out}");
        assert!(!out.contains(&"cd".repeat(32)), "{out}");
        assert!(out.contains("name = \"grafana\""), "{out}");
        assert!(out.contains("password = \"<redacted>\""), "{out}");
        assert!(out.contains("name = \"ops\""), "{out}");
        assert!(
            !out.contains("url-secret") && !out.contains("alice"),
            "{out}"
        );
        assert!(!out.contains("query-secret"), "{out}");
        assert!(
            out.contains("url = \"https://<redacted>@ch.example.com:8443/?password=<redacted>\""),
            "{out}"
        );
    }
}
