//! hush's tracker script, compiled in from `tracker/dist/` (built by
//! `tracker/build`, committed, so building hush needs no JavaScript toolchain) and
//! served at `GET /js/script.js` and `/js/hush.js` on the ingestion listener.
//!
//! The URL does not change between releases, so caches keep the script an hour and
//! may serve it up to a day past that while they revalidate in the background: a
//! release reaches every visitor within a day, and revalidation costs a 304 (the
//! ETag is the content's hash). `Access-Control-Allow-Origin: *` and
//! `Cross-Origin-Resource-Policy: cross-origin` let any site load it, also pages
//! that require CORS (`crossorigin`) or cross-origin isolation (COEP).

use std::sync::LazyLock;

use http::header::{self, HeaderName};

use crate::http::asset::{Coding, StaticAsset};

/// The minified script.
pub const SCRIPT: &[u8] = include_bytes!("../../tracker/dist/script.js");
/// [`SCRIPT`] gzipped (zopfli).
pub const SCRIPT_GZIP: &[u8] = include_bytes!("../../tracker/dist/script.js.gz");
/// [`SCRIPT`] brotli-compressed.
pub const SCRIPT_BROTLI: &[u8] = include_bytes!("../../tracker/dist/script.js.br");
/// The largest [`SCRIPT_GZIP`] may be: every feature included.
pub const GZIP_BUDGET: usize = 1024;
/// `Cache-Control` of the script.
pub const CACHE_CONTROL: &str = "public, max-age=3600, stale-while-revalidate=86400";

/// The paths the script is served at.
pub const PATHS: &[&str] = &["/js/script.js", "/js/hush.js"];

/// The script with its compressed variants, its ETags computed once.
pub static SCRIPT_ASSET: LazyLock<StaticAsset> = LazyLock::new(|| {
    StaticAsset::new(SCRIPT, "text/javascript; charset=utf-8", CACHE_CONTROL)
        .with_variant(Coding::Gzip, SCRIPT_GZIP)
        .with_variant(Coding::Brotli, SCRIPT_BROTLI)
        .with_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .with_header(
            HeaderName::from_static("cross-origin-resource-policy"),
            "cross-origin",
        )
        .with_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
});

#[cfg(test)]
mod tests {
    use std::io::Read;

    use sha2::{Digest, Sha256};

    use super::*;

    /// The build's manifest, written by `tracker/build`.
    const MANIFEST: &str = include_str!("../../tracker/dist/build.json");
    /// The source the committed build must come from.
    const SOURCE: &[u8] = include_bytes!("../../tracker/src/hush.js");

    fn manifest() -> serde_json::Value {
        serde_json::from_str(MANIFEST).expect("tracker/dist/build.json is JSON")
    }

    #[test]
    fn the_committed_build_is_of_the_current_source() {
        let hex: String = Sha256::digest(SOURCE)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            manifest()["source_sha256"].as_str(),
            Some(hex.as_str()),
            "tracker/src/hush.js changed since tracker/dist/ was built: run tracker/build"
        );
        assert_eq!(manifest()["bytes"].as_u64(), Some(SCRIPT.len() as u64));
        assert_eq!(
            manifest()["gzip_bytes"].as_u64(),
            Some(SCRIPT_GZIP.len() as u64)
        );
        assert_eq!(
            manifest()["brotli_bytes"].as_u64(),
            Some(SCRIPT_BROTLI.len() as u64)
        );
    }

    #[test]
    fn the_compressed_files_hold_the_script() {
        let mut gunzipped = Vec::new();
        flate2::read::GzDecoder::new(SCRIPT_GZIP)
            .read_to_end(&mut gunzipped)
            .expect("script.js.gz is gzip");
        assert!(gunzipped == SCRIPT, "script.js.gz is not script.js");
        let mut unbrotlied = Vec::new();
        brotli_decompressor::Decompressor::new(SCRIPT_BROTLI, 4096)
            .read_to_end(&mut unbrotlied)
            .expect("script.js.br is brotli");
        assert!(unbrotlied == SCRIPT, "script.js.br is not script.js");
    }

    #[test]
    fn the_script_fits_the_size_budget() {
        assert!(
            SCRIPT_GZIP.len() <= GZIP_BUDGET,
            "the tracker is {} bytes gzipped, over the budget of {GZIP_BUDGET}",
            SCRIPT_GZIP.len()
        );
        // The served gzip is what counts; gzip -9 of the same bytes, for comparison,
        // must not be far off (a broken compressor step would show here).
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut enc, SCRIPT).unwrap();
        let deflated = enc.finish().unwrap().len();
        assert!(
            SCRIPT_GZIP.len() <= deflated,
            "zopfli ({}) should not lose to zlib -9 ({deflated})",
            SCRIPT_GZIP.len()
        );
    }
}
