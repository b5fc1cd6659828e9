//! The Debian mirror's state: the date of its suite's Release file, which dates a base built from it and says whether Debian has anything newer for an older one.

use crate::matrix::Defaults;
use std::io::Read;
use std::time::Duration;

/// The largest Release file read (its Date is in the first lines).
const MAX_RELEASE: u64 = 1 << 20;

/// What the mirror's `dists/<suite>/Release` says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Its `Date:` (seconds since the epoch): when Debian last changed the suite.
    pub date: i64,
    /// Its `Valid-Until:`, when it has one.
    pub valid_until: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the Debian mirror's {url}: {why}")]
pub struct MirrorError {
    pub url: String,
    pub why: String,
}

/// The URL of the suite's Release file on the mirror.
pub fn release_url(defaults: &Defaults, suite: &str) -> String {
    format!(
        "{}/dists/{suite}/Release",
        defaults.mirror.trim_end_matches('/')
    )
}

/// Reads the suite's Release file (http(s) with retries, or file://).
pub async fn release(defaults: &Defaults, suite: &str) -> Result<Release, MirrorError> {
    let url = release_url(defaults, suite);
    let step = format!("read {url}");
    let text = crate::retry::network(
        &step,
        |_: &MirrorError| true,
        || {
            let url = url.clone();
            async move {
                tokio::task::spawn_blocking(move || fetch(&url))
                    .await
                    .expect("mirror task")
            }
        },
    )
    .await?;
    parse(&text).map_err(|why| MirrorError { url, why })
}

/// The Release file's text, at most `MAX_RELEASE` bytes.
fn fetch(url: &str) -> Result<String, MirrorError> {
    let failed = |why: String| MirrorError {
        url: url.to_string(),
        why,
    };
    let mut text = String::new();
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_RELEASE).read_to_string(&mut text))
            .map_err(|e| failed(e.to_string()))?;
        return Ok(text);
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_RELEASE)
        .reader()
        .read_to_string(&mut text)
        .map_err(|e| failed(e.to_string()))?;
    Ok(text)
}

/// The `Date:` and `Valid-Until:` of a Release file.
pub fn parse(text: &str) -> Result<Release, String> {
    let field = |name: &str| {
        text.lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(name).map(str::trim))
    };
    let date = field("Date:").ok_or("it has no Date: field")?;
    Ok(Release {
        date: rfc2822(date)?,
        valid_until: field("Valid-Until:").map(rfc2822).transpose()?,
    })
}

/// An RFC 2822 date as Debian writes it ("Fri, 30 Oct 2026 08:08:01 UTC").
fn rfc2822(s: &str) -> Result<i64, String> {
    // Debian writes the zone as UTC, which RFC 2822 spells +0000.
    let numeric = match s.strip_suffix(" UTC") {
        Some(rest) => format!("{rest} +0000"),
        None => s.to_string(),
    };
    jiff::fmt::rfc2822::parse(&numeric)
        .map(|z| z.timestamp().as_second())
        .map_err(|e| format!("`{s}` is not a date: {e}"))
}

/// A date as RFC 3339 (UTC, seconds): what labels and annotations carry.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Now, in seconds since the epoch (what dates are compared with).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The day of a date (`2026-10-30`).
pub fn day(secs: i64) -> String {
    rfc3339(secs).chars().take(10).collect()
}

/// An RFC 3339 date back to seconds since the epoch.
pub fn from_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Release file's dates as Debian writes them; a file without a Date
    /// or with a date that is not one is refused, naming what it found.
    #[test]
    fn release_dates_parse_as_debian_writes_them() {
        let text = "Origin: Debian\nSuite: unstable\nDate: Fri, 30 Oct 2026 08:08:01 UTC\nValid-Until: Fri, 06 Nov 2026 08:08:01 UTC\nMD5Sum:\n";
        let r = parse(text).unwrap();
        assert_eq!(rfc3339(r.date), "2026-10-30T08:08:01Z");
        assert_eq!(r.valid_until.unwrap() - r.date, 7 * 86_400);
        assert_eq!(from_rfc3339("2026-10-30T08:08:01Z"), Some(r.date));
        assert_eq!(
            parse("Origin: Debian\n").unwrap_err(),
            "it has no Date: field"
        );
        assert!(parse("Date: yesterday\n")
            .unwrap_err()
            .contains("`yesterday` is not a date"));
    }
}
