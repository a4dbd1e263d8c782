//! Page URLs: the hand-written fast path must agree with a full WHATWG parse (the url
//! crate), and nothing from the query or fragment may leak into the stored path
//! except the fragment in hash mode.
#![no_main]

use hush::page_url::{self, MAX_URL_BYTES, MAX_UTM_CHARS, UrlError};
use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let hash_mode = mode & 1 == 1;
    let got = page_url::parse(input, hash_mode);
    let trimmed = input.trim_ascii();
    if trimmed.is_empty() {
        assert_eq!(got, Err(UrlError::Empty));
        return;
    }
    if trimmed.len() > MAX_URL_BYTES {
        assert_eq!(got, Err(UrlError::TooLong));
        return;
    }
    // The reference: what the slow path alone would produce.
    let reference = Url::parse(trimmed).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str()
                .is_some_and(|h| !h.strip_suffix('.').unwrap_or(h).is_empty())
    });
    match (got, reference) {
        (Ok(page), Some(url)) => {
            let host = url.host_str().unwrap_or_default();
            assert_eq!(
                page.hostname,
                host.strip_suffix('.').unwrap_or(host),
                "{input:?}"
            );
            let path = if url.path().is_empty() {
                "/"
            } else {
                url.path()
            };
            let mut expected = path.to_owned();
            if let Some(f) = url.fragment().filter(|f| hash_mode && !f.is_empty()) {
                expected.push('#');
                expected.push_str(f);
            }
            assert_eq!(page.pathname, expected, "{input:?}");
            if url.query().is_none() {
                assert!(page.utm.is_empty(), "UTM without a query: {input:?}");
            }
            for v in [
                &page.utm.source,
                &page.utm.medium,
                &page.utm.campaign,
                &page.utm.term,
                &page.utm.content,
            ] {
                assert!(v.chars().count() <= MAX_UTM_CHARS, "{v:?}");
            }
        }
        (Err(_), None) => {}
        (got, reference) => panic!("{input:?}: parse gave {got:?}, url crate {reference:?}"),
    }
});
