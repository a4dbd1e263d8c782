//! `hush sessions build`: builds the finished visits of past days into `sessions`
//! now, as `serve` does every `stats.sessions_build_interval_secs` (after a bulk
//! load, or to see what the builder does).

use jiff::Timestamp;

use crate::store::Timeouts;
use crate::store::sessions::SessionBuilder;

/// `hush sessions build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub config: super::ConfigArgs,
    /// Only this site (a configured domain); every site when absent.
    #[arg(long)]
    pub site: Option<String>,
}

/// Runs `hush sessions build`: every due day of each site, then a line per site.
pub(super) async fn build(args: BuildArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    crate::logging::init(&config.log)?;
    let client = crate::db::client(&config.clickhouse);
    crate::store::migrate::check_current(&client).await?;
    let builder = SessionBuilder::new(
        client,
        Timeouts::from_config(&config),
        config.session.timeout_secs,
    );
    let sites: Vec<&str> = match &args.site {
        Some(site) => {
            if !config.sites.iter().any(|s| s.domain == *site) {
                anyhow::bail!("{site} is not a configured site");
            }
            vec![site.as_str()]
        }
        None => config.sites.iter().map(|s| s.domain.as_str()).collect(),
    };
    for site in sites {
        let report = builder
            .build_site(site, Timestamp::now(), usize::MAX)
            .await?;
        println!(
            "{site}: {} days built, {} not usable{}",
            report.built.len(),
            report.skipped.len(),
            report
                .skipped
                .iter()
                .map(|(d, why)| format!(" {d} ({why:?})"))
                .collect::<String>()
        );
    }
    Ok(())
}
