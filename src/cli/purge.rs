//! `hush purge`: the retention purge from cron or by hand, with a progress bar on a
//! terminal.

use std::io::IsTerminal;

use jiff::Timestamp;

use crate::store::Timeouts;
use crate::store::purge::{
    LogProgress, Progress, PurgeMetrics, PurgeOptions, Purger, history, run_with_lease,
};

/// An `indicatif` bar on stderr.
struct BarProgress(indicatif::ProgressBar);

impl Progress for BarProgress {
    fn start(&self, steps: u64) {
        self.0.set_length(steps);
    }
    fn step(&self, message: &str) {
        self.0.set_message(message.to_owned());
        self.0.inc(1);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// The right progress reporter for the CLI: a bar when stderr is a terminal.
fn cli_progress() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
        {
            bar.set_style(style);
        }
        Box::new(BarProgress(bar))
    } else {
        Box::new(LogProgress)
    }
}

/// `hush purge`: for cron, or to run the retention purge by hand.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub config: super::ConfigArgs,
    /// Report per site and month the rows that would go; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the recent `purge_log` instead of purging.
    #[arg(long)]
    pub history: bool,
    /// Rows of history to print.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// Compute cutoffs from this instant (RFC 3339) instead of now.
    #[arg(long, value_parser = parse_now)]
    pub now: Option<Timestamp>,
}

fn parse_now(s: &str) -> Result<Timestamp, String> {
    s.parse().map_err(|e: jiff::Error| e.to_string())
}

/// Runs `hush purge`.
pub(super) async fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    crate::logging::init(&config.log)?;
    let client = crate::db::client(&config.clickhouse);
    if args.history {
        for r in history(&client, Timeouts::from_config(&config).query, args.limit).await? {
            let at = Timestamp::from_millisecond(r.started)
                .map(|t| t.to_string())
                .unwrap_or_default();
            println!(
                "{at} {} {:<14} site={} partition={} selector={} actor={} before={} after={} {}{}",
                r.run_id,
                r.method,
                r.site,
                r.partition,
                r.selector,
                r.actor,
                r.rows_before,
                r.rows_after,
                r.outcome,
                if r.error.is_empty() {
                    String::new()
                } else {
                    format!(" error={}", r.error)
                }
            );
        }
        return Ok(());
    }
    let purger = Purger::new(client, &config, PurgeMetrics::default())?;
    let opts = PurgeOptions {
        now: args.now.unwrap_or_else(Timestamp::now),
        dry_run: args.dry_run,
        actor: "cli".into(),
    };
    let progress = cli_progress();
    let report = if args.dry_run {
        purger.run(&opts, progress.as_ref()).await?
    } else {
        run_with_lease(&purger, &opts, progress.as_ref()).await?
    };
    print!("{}", report.render());
    Ok(())
}
