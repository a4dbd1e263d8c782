//! `hush demo`: realistic demo traffic for one site, written straight into
//! ClickHouse (see [`crate::store::demo`] for what the rows are).

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::Context as _;
use jiff::civil::Date;

use crate::store::demo::{self, DemoOptions};

/// `hush demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: super::ConfigArgs,
    /// The site (a configured `sites.domain`) to write rows for.
    #[arg(long)]
    pub site: String,
    /// Whole days of traffic, ending today (the site's today) or `--until`.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Mean visitors a day (weekends fewer, weekdays more).
    #[arg(long, default_value_t = 1_000)]
    pub visitors_per_day: u32,
    /// The same seed and options write the same rows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The last day (YYYY-MM-DD, in the site's time zone); rows after now are never
    /// written.
    #[arg(long)]
    pub until: Option<Date>,
    /// Write rows for a site that is not configured (its days in UTC).
    #[arg(long)]
    pub force: bool,
    /// Generator threads (default: the cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `hush demo`.
pub(super) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    crate::logging::init(&config.log)?;
    let timezone = match config.sites.iter().find(|s| s.domain == args.site) {
        Some(site) => site.timezone.clone(),
        None if args.force => "UTC".to_owned(),
        None => {
            let alias = config.sites.iter().find(|s| s.aliases.contains(&args.site));
            match alias {
                Some(site) => anyhow::bail!(
                    "{:?} is an alias of {:?}: name the site by its domain",
                    args.site,
                    site.domain
                ),
                None => anyhow::bail!(
                    "{:?} is not a configured site (add a [[sites]] entry, or pass --force \
                     to write its rows anyway)",
                    args.site
                ),
            }
        }
    };
    let now = crate::clock::now_secs();
    let last_day = match args.until {
        Some(day) => day,
        None => demo::local_day(i64::from(now), &timezone)?,
    };
    let options = DemoOptions {
        site: args.site.clone(),
        timezone,
        days: args.days,
        visitors_per_day: args.visitors_per_day,
        seed: args.seed,
        last_day,
        not_after: now,
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    crate::store::migrate::run(&config.clickhouse)
        .await
        .context("migration failed")?;

    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut progress = move |rows: u64| {
        if terminal {
            let secs = started.elapsed().as_secs_f64();
            eprint!(
                "\r{rows} rows stored ({:.0} rows/s)",
                rows as f64 / secs.max(1e-3)
            );
        }
    };
    let summary = demo::write(&config.clickhouse, &options, threads, &mut progress).await;
    if terminal {
        eprintln!();
    }
    let summary = summary.with_context(|| format!("demo data for {}", args.site))?;
    let secs = started.elapsed().as_secs_f64();
    let first = last_day
        .checked_sub(jiff::Span::new().days(i64::from(args.days.max(1)) - 1))
        .map_or_else(|_| "?".to_owned(), |d| d.to_string());
    println!(
        "{site}: {rows} rows ({visits} visits, {pageviews} page views, {engagements} \
         engagement pings, {customs} custom events) for {first} .. {last_day} in \
         {inserts} inserts, {secs:.1} s ({rate:.0} rows/s)",
        site = args.site,
        rows = summary.rows,
        visits = summary.visits,
        pageviews = summary.pageviews,
        engagements = summary.engagements,
        customs = summary.custom_events,
        inserts = summary.inserts,
        rate = summary.rows as f64 / secs.max(1e-3),
    );
    Ok(())
}
