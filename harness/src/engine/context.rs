//! The docker CLI's contexts, read as it reads them: DOCKER_CONTEXT, else the config's `currentContext`; each context's endpoint and TLS files.

use super::EngineError;
use std::path::{Path, PathBuf};

/// Where a context points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    /// The context's TLS files (ca.pem, cert.pem, key.pem), when it has them.
    pub tls: Option<PathBuf>,
}

/// The docker CLI's configuration directory: DOCKER_CONFIG, else ~/.docker.
fn config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
}

/// The current context's endpoint, or None for the `default` context (or
/// none at all).
pub fn current() -> Result<Option<Endpoint>, EngineError> {
    let Some(dir) = config_dir() else {
        return Ok(None);
    };
    let env = std::env::var("DOCKER_CONTEXT")
        .ok()
        .filter(|c| !c.is_empty());
    current_in(&dir, env)
}

fn current_in(dir: &Path, env: Option<String>) -> Result<Option<Endpoint>, EngineError> {
    let (name, from) = match env {
        Some(name) => (name, "DOCKER_CONTEXT".to_string()),
        None => {
            let config = dir.join("config.json");
            let Ok(text) = std::fs::read_to_string(&config) else {
                return Ok(None);
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| EngineError::Context {
                    name: "?".into(),
                    from: config.display().to_string(),
                    why: format!("the docker CLI's config does not parse: {e}"),
                })?;
            match v["currentContext"].as_str() {
                Some(name) if !name.is_empty() => (
                    name.to_string(),
                    format!("currentContext in {}", config.display()),
                ),
                _ => return Ok(None),
            }
        }
    };
    if name == "default" {
        return Ok(None);
    }
    endpoint(dir, &name, &from).map(Some)
}

/// The context `name`'s endpoint: `contexts/meta/<sha256(name)>/meta.json`.
fn endpoint(dir: &Path, name: &str, from: &str) -> Result<Endpoint, EngineError> {
    use sha2::Digest as _;
    let id = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let meta = dir.join("contexts/meta").join(&id).join("meta.json");
    let failed = |why: String| EngineError::Context {
        name: name.to_string(),
        from: from.to_string(),
        why,
    };
    let text = std::fs::read_to_string(&meta)
        .map_err(|e| failed(format!("{}: {e}: no such context", meta.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| failed(format!("{} does not parse: {e}", meta.display())))?;
    let host = v["Endpoints"]["docker"]["Host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| failed(format!("{} names no docker endpoint", meta.display())))?
        .to_string();
    let tls = dir.join("contexts/tls").join(&id).join("docker");
    Ok(Endpoint {
        host,
        tls: tls.join("ca.pem").is_file().then_some(tls),
    })
}

/// The TLS files of the current context when `host` is its endpoint.
pub fn tls_dir_for(host: &str) -> Option<PathBuf> {
    current()
        .ok()
        .flatten()
        .filter(|e| e.host == host)
        .and_then(|e| e.tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(dir: &Path, name: &str, host: &str, tls: bool) {
        use sha2::Digest as _;
        let id = hex::encode(sha2::Sha256::digest(name.as_bytes()));
        let meta = dir.join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            serde_json::json!({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}}).to_string(),
        )
        .unwrap();
        if tls {
            let t = dir.join("contexts/tls").join(&id).join("docker");
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("ca.pem"), "x").unwrap();
        }
    }

    #[test]
    fn contexts_are_read_as_the_docker_cli_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(current_in(d, None).unwrap(), None, "no config: no context");
        context(d, "arm-box", "tcp://arm-box:2376", true);
        context(d, "rootless", "unix:///run/user/1000/docker.sock", false);
        std::fs::write(d.join("config.json"), r#"{"currentContext":"rootless"}"#).unwrap();
        let e = current_in(d, None).unwrap().unwrap();
        assert_eq!(
            (e.host.as_str(), e.tls),
            ("unix:///run/user/1000/docker.sock", None)
        );
        // DOCKER_CONTEXT wins over the config; its TLS files come with it.
        let e = current_in(d, Some("arm-box".into())).unwrap().unwrap();
        assert_eq!(e.host, "tcp://arm-box:2376");
        assert!(e.tls.unwrap().ends_with("docker"));
        assert_eq!(current_in(d, Some("default".into())).unwrap(), None);
        // A context that does not exist is an error naming it and where it came from.
        let err = current_in(d, Some("gone".into())).unwrap_err().to_string();
        assert!(
            err.contains("docker context `gone` (DOCKER_CONTEXT)"),
            "{err}"
        );
        assert!(err.contains("no such context"), "{err}");
    }
}
