//! The `hush` command line: exit codes and messages of `check-config`, `version` and
//! `key new`.

use std::process::{Command, Output};

fn hush(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(args)
        // A developer's environment must not change the outcome.
        .env_remove("HUSH_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run hush")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    path.to_string_lossy().into_owned()
}

#[test]
fn version_prints_the_crate_version() {
    let out = hush(&["version"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("hush {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "good.toml",
        "[clickhouse]\npassword = \"s3cret-value\"\n[writer]\nbatch_rows = 512\n\
         [[sites]]\ndomain = \"example.com\"\n",
    );
    let out = hush(&["check-config", "--config", &path]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("batch_rows = 512"), "{stdout}");
    assert!(stdout.contains("domain = \"example.com\""), "{stdout}");
    // Defaults are shown too: this is the effective configuration.
    assert!(stdout.contains("ipv4_prefix = 24"), "{stdout}");
    assert!(!stdout.contains("s3cret-value"), "{stdout}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
}

#[test]
fn check_config_accepts_the_shipped_files() {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "config/default.toml",
        "config/hush.toml",
        "config/production.example.toml",
    ] {
        let out = hush(&["check-config", "--config", &format!("{root}/{file}")]);
        assert!(out.status.success(), "{file}: {out:?}");
    }
}

#[test]
fn check_config_names_the_bad_key_value_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[privacy]\nipv4_prefix = 40\n",
            &["privacy.ipv4_prefix", "40", "between 8 and 24"][..],
        ),
        (
            "[[sites]]\ndomain = \"Example.COM\"\n",
            &["sites[0].domain", "Example.COM", "lower-case"][..],
        ),
        ("[writer]\nbatch_rowz = 3\n", &["batch_rowz"][..]),
        ("[server]\nlisten = \"not an address\"\n", &["listen"][..]),
        (
            "[clickhouse]\nurl = \"ftp://x\"\n",
            &["clickhouse.url", "ftp://x"][..],
        ),
        ("this is = = not toml\n", &["TOML"][..]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.toml"), text);
        let out = hush(&["check-config", "--config", &path]);
        assert_eq!(out.status.code(), Some(1), "{text}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "{text}: printed a config despite the error"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in *needles {
            assert!(
                stderr.to_lowercase().contains(&needle.to_lowercase()),
                "{text}: stderr lacks {needle:?}: {stderr}"
            );
        }
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let out = hush(&["check-config", "--config", "/nonexistent/hush.toml"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/hush.toml"), "{stderr}");
}

#[test]
fn usage_errors_exit_with_2() {
    let out = hush(&["serve", "--listen", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = hush(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// The key `hush key new` printed, and its `[[stats.keys]]` entry.
fn new_key(args: &[&str]) -> (String, String) {
    let out = hush(&[&["key", "new"][..], args].concat());
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stats API key (shown once, keep it secret): "))
        .expect("the key line")
        .to_owned();
    let snippet = stdout
        .split_once("[[stats.keys]]")
        .map(|(_, rest)| format!("[[stats.keys]]{rest}"))
        .expect("the config entry");
    (secret, snippet)
}

#[test]
fn key_new_prints_a_key_and_the_entry_that_configures_it() {
    use hush::token::{KeyDenied, StatsKeys};
    let sites = "[[sites]]\ndomain = \"a.com\"\n[[sites]]\ndomain = \"b.com\"\n\
                 [[sites]]\ndomain = \"c.com\"\n";
    let (secret, snippet) = new_key(&["--name", "q3 report", "--sites", "a.com,b.com"]);
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(
        !snippet.contains(&secret),
        "the config entry holds the key: {snippet}"
    );
    let config = hush::config::Config::from_toml_str(&format!("{sites}{snippet}")).unwrap();
    let keys = StatsKeys::from_config(&config.stats.keys);
    assert_eq!(keys.authorize(&secret, "a.com"), Ok("q3 report"));
    assert_eq!(keys.authorize(&secret, "b.com"), Ok("q3 report"));
    assert_eq!(
        keys.authorize(&secret, "c.com"),
        Err(KeyDenied::SiteNotAllowed)
    );

    // `check-config` accepts the file with the entry pasted in.
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "keys.toml", &format!("{sites}{snippet}"));
    let out = hush(&["check-config", "--config", &path]);
    assert!(out.status.success(), "{out:?}");

    let (all, snippet) = new_key(&["--name", "all", "--sites", "*"]);
    assert_ne!(all, secret);
    let config = hush::config::Config::from_toml_str(&format!("{sites}{snippet}")).unwrap();
    let keys = StatsKeys::from_config(&config.stats.keys);
    assert_eq!(keys.authorize(&all, "c.com"), Ok("all"));
    assert_eq!(keys.authorize(&secret, "a.com"), Err(KeyDenied::Unknown));
}

#[test]
fn key_new_refuses_bad_arguments() {
    for (args, code, needle) in [
        (&["--name", "x"][..], 2, "--sites"),
        (&["--sites", "a.com"][..], 2, "--name"),
        (&["--name", " ", "--sites", "a.com"][..], 1, "--name"),
        (&["--name", "x", "--sites", "*,a.com"][..], 1, "only entry"),
        (&["--name", "x", "--sites", "A.com"][..], 1, "lower-case"),
        (
            &["--name", "x", "--sites", "a.com,,b.com"][..],
            1,
            "--sites",
        ),
        (&["--name", "x", "--sites", "a.com,a.com"][..], 1, "twice"),
    ] {
        let out = hush(&[&["key", "new"][..], args].concat());
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: printed a key");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
