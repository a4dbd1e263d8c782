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

/// `hush <args>` with `stdin` piped in.
fn hush_with_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(args)
        .env_remove("HUSH_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hush");
    // hush may refuse its arguments before reading stdin: a closed pipe is no error.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("hush output")
}

/// The printed configuration entry starting at `header`.
fn entry(stdout: &str, header: &str) -> String {
    stdout
        .split_once(header)
        .map(|(_, rest)| format!("{header}{rest}"))
        .unwrap_or_else(|| panic!("no {header} in {stdout}"))
}

const TWO_SITES: &str = "[[sites]]\ndomain = \"a.com\"\n[[sites]]\ndomain = \"b.com\"\n";

#[test]
fn user_add_prints_an_argon2id_entry_that_verifies_the_password() {
    use hush::app::auth::verify_password;
    let out = hush_with_stdin(
        &[
            "user",
            "add",
            "alice",
            "--sites",
            "a.com,b.com",
            "--password-stdin",
        ],
        "correct horse battery\nsecond line ignored\n",
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("correct horse"), "{stdout}");
    let snippet = entry(&stdout, "[[users]]");
    let config = hush::config::Config::from_toml_str(&format!("{TWO_SITES}{snippet}")).unwrap();
    let user = &config.users[0];
    assert_eq!(user.name, "alice");
    assert_eq!(user.sites, ["a.com", "b.com"]);
    assert!(
        user.password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        user.password_hash
    );
    assert!(verify_password(
        &user.password_hash,
        "correct horse battery"
    ));
    assert!(!verify_password(
        &user.password_hash,
        "correct horse batter"
    ));
    assert!(!verify_password(&user.password_hash, "second line ignored"));
    // `check-config` takes the file with the entry pasted in.
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "users.toml", &format!("{TWO_SITES}{snippet}"));
    let out = hush(&["check-config", "--config", &path]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains(&user.password_hash), "{shown}");

    // Every site; a second run salts differently.
    let out = hush_with_stdin(
        &["user", "add", "root", "--sites", "*", "--password-stdin"],
        "correct horse battery",
    );
    assert!(out.status.success(), "{out:?}");
    let other = entry(&String::from_utf8(out.stdout).unwrap(), "[[users]]");
    let config = hush::config::Config::from_toml_str(&format!("{TWO_SITES}{other}")).unwrap();
    assert_eq!(config.users[0].sites, ["*"]);
    assert_ne!(config.users[0].password_hash, user.password_hash);
    assert!(verify_password(
        &config.users[0].password_hash,
        "correct horse battery"
    ));
}

#[test]
fn user_add_refuses_bad_arguments() {
    for (args, stdin, code, needle) in [
        // No terminal and no --password-stdin: it cannot ask.
        (
            &["alice", "--sites", "a.com"][..],
            None,
            1,
            "--password-stdin",
        ),
        (
            &["alice", "--sites", "a.com", "--password-stdin"][..],
            Some("short\n"),
            1,
            "at least 8",
        ),
        (
            &["alice", "--sites", "a.com", "--password-stdin"][..],
            Some(""),
            1,
            "at least 8",
        ),
        (
            &[" alice", "--sites", "a.com", "--password-stdin"][..],
            Some("long enough\n"),
            1,
            "NAME",
        ),
        (
            &["alice", "--sites", "*,a.com", "--password-stdin"][..],
            Some("long enough\n"),
            1,
            "only entry",
        ),
        (
            &["alice", "--sites", "A.com", "--password-stdin"][..],
            Some("long enough\n"),
            1,
            "lower-case",
        ),
        (
            &["alice", "--password-stdin"][..],
            Some("long enough\n"),
            2,
            "--sites",
        ),
    ] {
        let args = [&["user", "add"][..], args].concat();
        let out = match stdin {
            Some(text) => hush_with_stdin(&args, text),
            None => Command::new(env!("CARGO_BIN_EXE_hush"))
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap(),
        };
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: printed an entry");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// The slug `hush share new` printed, and its `[[sites.shares]]` entry.
fn new_share(args: &[&str], stdin: &str) -> (String, String) {
    let out = hush_with_stdin(&[&["share", "new"][..], args].concat(), stdin);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let link = stdout
        .lines()
        .find_map(|l| l.split_once(": /share/").map(|(_, link)| link.to_owned()))
        .unwrap_or_else(|| panic!("no link in {stdout}"));
    let (site, slug) = link.split_once("?auth=").expect("?auth= in the link");
    assert_eq!(site, "a.com", "{stdout}");
    (slug.to_owned(), entry(&stdout, "[[sites.shares]]"))
}

fn site_with(snippet: &str) -> String {
    format!("[[sites]]\ndomain = \"a.com\"\n{snippet}")
}

#[test]
fn share_new_prints_a_link_and_the_entry_that_configures_it() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let (slug, snippet) = new_share(&["--site", "a.com", "--name", "press kit"], "");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&slug)
        .expect("base64url slug");
    assert!(bytes.len() >= 16, "{slug}");
    assert!(
        !snippet.contains(&slug),
        "the entry holds the slug: {snippet}"
    );
    let config = hush::config::Config::from_toml_str(&site_with(&snippet)).unwrap();
    let share = &config.sites[0].shares[0];
    assert_eq!(share.name, "press kit");
    let digest: String = sha2::Sha256::digest(slug.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(share.slug_sha256, digest);
    assert!(share.password_hash.is_none() && share.filters.is_none());

    // With a password (from stdin) and locked filters.
    let filter = r#"[["is", "event:page", ["/pricing"]], ["contains", "visit:source", ["it's"]]]"#;
    let (other, snippet) = new_share(
        &["--site", "a.com", "--password-stdin", "--filter", filter],
        "share-password\n",
    );
    assert_ne!(other, slug);
    let config = hush::config::Config::from_toml_str(&site_with(&snippet)).unwrap();
    let share = &config.sites[0].shares[0];
    assert!(hush::app::auth::verify_password(
        share.password_hash.as_deref().expect("a password hash"),
        "share-password"
    ));
    let filters: serde_json::Value =
        serde_json::from_str(share.filters.as_deref().unwrap()).unwrap();
    assert_eq!(
        filters,
        serde_json::from_str::<serde_json::Value>(filter).unwrap()
    );
    assert!(
        share.name.starts_with("link "),
        "a default name: {}",
        share.name
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shares.toml", &site_with(&snippet));
    let out = hush(&["check-config", "--config", &path]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn share_new_refuses_bad_arguments() {
    for (args, code, needle) in [
        (
            &["--site", "a.com", "--filter", "not json"][..],
            1,
            "--filter",
        ),
        (&["--site", "a.com", "--filter", "[]"][..], 1, "non-empty"),
        (
            &[
                "--site",
                "a.com",
                "--filter",
                r#"[["is", "visit:nope", ["x"]]]"#,
            ][..],
            1,
            "visit:nope",
        ),
        (&["--site", "*"][..], 1, "one site"),
        (&["--site", "A.com"][..], 1, "lower-case"),
        (
            &["--site", "a.com", "--password"][..],
            1,
            "--password-stdin",
        ),
        (&[][..], 2, "--site"),
    ] {
        let args = [&["share", "new"][..], args].concat();
        let out = Command::new(env!("CARGO_BIN_EXE_hush"))
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: printed a link");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // A config with a bad locked filter is refused by check-config, naming it.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.toml",
        &site_with(&format!(
            "[[sites.shares]]\nname = \"x\"\nslug_sha256 = \"{}\"\nfilters = '[[\"is\", \"visit:nope\", [\"x\"]]]'\n",
            "ab".repeat(32)
        )),
    );
    let out = hush(&["check-config", "--config", &path]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sites[0].shares[0].filters"), "{stderr}");
}
