//! `hush export`, `hush erase`, `hush site delete`: data-subject requests from the
//! command line. Arguments become a [`Selector`] here; the store never sees clap.

use crate::config::Config;
use crate::pipeline::writer::QUARANTINE_DIR;
use crate::store::Timeouts;
use crate::store::dsr::{
    EraseScope, ExportFormat, Selector, delete_site_in, erase_in, export as export_rows,
    parse_prop, parse_time,
};
use crate::store::purge::PurgeError;

/// Selector options shared by `hush export` and `hush erase`.
#[derive(Debug, clap::Args)]
pub struct SelectorArgs {
    #[command(flatten)]
    pub config: super::ConfigArgs,
    /// Site domain.
    #[arg(long)]
    pub site: String,
    /// Property equality `key=value`; repeatable (all must match).
    #[arg(long = "prop")]
    pub props: Vec<String>,
    #[arg(long)]
    pub visitor_id: Option<u64>,
    /// From this instant (RFC 3339 or YYYY-MM-DD, inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this instant (RFC 3339 or YYYY-MM-DD, exclusive).
    #[arg(long)]
    pub to: Option<String>,
}

impl SelectorArgs {
    fn selector(&self) -> Result<Selector, PurgeError> {
        let sel = Selector {
            site: self.site.clone(),
            props: self
                .props
                .iter()
                .map(|p| parse_prop(p))
                .collect::<Result<_, _>>()?,
            visitor_id: self.visitor_id,
            from: self.from.as_deref().map(parse_time).transpose()?,
            to: self.to.as_deref().map(parse_time).transpose()?,
        };
        sel.validate()?;
        Ok(sel)
    }
}

/// `hush export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub selector: SelectorArgs,
    /// `jsonl` or `csv`.
    #[arg(long, default_value = "jsonl")]
    pub format: String,
}

/// `hush site ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SiteCommand {
    /// Delete every row of a site (salts are per day for all sites and hold no site data).
    Delete {
        #[command(flatten)]
        config: super::ConfigArgs,
        /// Site domain.
        #[arg(long)]
        site: String,
        /// Required: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs `hush export`: rows stream to stdout as ClickHouse sends them.
pub(super) async fn export(args: ExportArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let config = args.selector.config.load()?;
    crate::logging::init(&config.log)?;
    let selector = args.selector.selector()?;
    let format = ExportFormat::parse(&args.format)?;
    let client = crate::db::client(&config.clickhouse);
    let mut cursor = export_rows(
        &client,
        Timeouts::from_config(&config).query,
        &selector,
        format,
    )?;
    // The CLI runs on a multi-threaded runtime; a blocked pipe must not stall the
    // runtime thread that polls the cursor.
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = cursor.next().await? {
        tokio::task::block_in_place(|| stdout.write_all(&chunk))?;
    }
    tokio::task::block_in_place(|| stdout.flush())?;
    Ok(())
}

/// Runs `hush erase`.
pub(super) async fn erase(args: SelectorArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    crate::logging::init(&config.log)?;
    let selector = args.selector()?;
    let client = crate::db::client(&config.clickhouse);
    warn_pending_spool(&config);
    let quarantine = quarantine_dir(&config);
    let scope = EraseScope {
        quarantine: quarantine.as_deref(),
        ..EraseScope::default()
    };
    let report = erase_in(
        &client,
        Timeouts::from_config(&config),
        &selector,
        "cli",
        scope,
    )
    .await?;
    println!(
        "erased {} rows of {} (run {}); 0 remain; quarantine files changed: {} ({} rows)",
        report.rows_before,
        report.site,
        report.run_id,
        report.files_changed,
        report.file_rows_erased
    );
    Ok(())
}

/// The configured spool's `quarantine/`, when it is on this machine.
fn quarantine_dir(config: &Config) -> Option<std::path::PathBuf> {
    let dir = config.spool.dir.as_ref()?.join(QUARANTINE_DIR);
    dir.is_dir().then_some(dir)
}

/// The CLI runs beside `serve`, not inside it, so it cannot wait for the writer as the
/// admin API does: rows still in the configured spool are stored after the erasure
/// and are not erased. Says so, loudly, when there are any.
fn warn_pending_spool(config: &Config) {
    let Some(dir) = config.spool.dir.as_ref().filter(|d| d.exists()) else {
        return;
    };
    match crate::pipeline::spool::Spool::inspect(dir) {
        Ok(status) if status.pending_records > 0 => eprintln!(
            "warning: the spool in {} holds {} rows not yet stored in ClickHouse; they are \
             stored after this erasure and are not erased by it. Use the admin API \
             (POST /admin/v1/erase), which waits for them, or run this again once `hush \
             spool status` shows 0 pending hits.",
            dir.display(),
            status.pending_records
        ),
        Ok(_) => {}
        Err(e) => eprintln!(
            "warning: cannot read the spool in {} ({e}); rows still in it would be \
             stored after this erasure and not erased by it",
            dir.display()
        ),
    }
}

/// Runs `hush site ...`.
pub(super) async fn site(command: SiteCommand) -> anyhow::Result<()> {
    match command {
        SiteCommand::Delete { config, site, yes } => {
            anyhow::ensure!(
                yes,
                "deleting all rows of {site} cannot be undone: add --yes"
            );
            let config = config.load()?;
            crate::logging::init(&config.log)?;
            let client = crate::db::client(&config.clickhouse);
            warn_pending_spool(&config);
            let quarantine = quarantine_dir(&config);
            let scope = EraseScope {
                quarantine: quarantine.as_deref(),
                ..EraseScope::default()
            };
            let report =
                delete_site_in(&client, Timeouts::from_config(&config), &site, "cli", scope)
                    .await?;
            println!(
                "deleted {} rows of {} (run {}); 0 remain",
                report.rows_before, report.site, report.run_id
            );
            Ok(())
        }
    }
}
