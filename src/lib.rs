//! hush: a privacy-respecting web analytics collector.
