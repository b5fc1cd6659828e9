//! Where an engine listens, as the docker CLI takes it, and the TLS files it needs.

use super::{context, EngineError};

/// Where an engine listens, as the docker CLI takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(String),
    Tcp(String),
    Tls(String),
}

impl Address {
    /// `unix:///run/docker.sock`, `tcp://host:2375` (TLS when
    /// DOCKER_TLS_VERIFY is set and not empty), `https://host:2376`.
    pub fn parse(url: &str) -> Result<Self, EngineError> {
        let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty())
            || context::tls_dir_for(url).is_some();
        Self::parse_with(url, tls)
    }

    fn parse_with(url: &str, tls: bool) -> Result<Self, EngineError> {
        let bad = || EngineError::BadUrl {
            host: url.to_string(),
            url: url.to_string(),
        };
        if let Some(path) = url.strip_prefix("unix://") {
            return if path.starts_with('/') {
                Ok(Address::Unix(path.to_string()))
            } else {
                Err(bad())
            };
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        let (name, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c));
        if !name_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        match (scheme, tls) {
            ("tcp", false) => Ok(Address::Tcp(format!("tcp://{authority}"))),
            ("tcp", true) | ("https", _) => Ok(Address::Tls(format!("tcp://{authority}"))),
            _ => Err(bad()),
        }
    }
}

/// DOCKER_CERT_PATH's (default ~/.docker) key, cert and CA, each checked to exist.
pub(super) fn tls_files(host: &str) -> Result<[std::path::PathBuf; 3], EngineError> {
    let dir = std::env::var_os("DOCKER_CERT_PATH")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| context::tls_dir_for(host))
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))
        .unwrap_or_default();
    let files = ["key.pem", "cert.pem", "ca.pem"].map(|f| dir.join(f));
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(EngineError::TlsFiles {
            host: host.to_string(),
            file: missing.display().to_string(),
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_addresses_parse_as_the_docker_cli_takes_them() {
        let ok = |url, tls| Address::parse_with(url, tls).unwrap();
        assert_eq!(
            ok("unix:///run/other.sock", false),
            Address::Unix("/run/other.sock".into())
        );
        assert_eq!(
            ok("tcp://10.0.0.2:2375", false),
            Address::Tcp("tcp://10.0.0.2:2375".into())
        );
        assert_eq!(
            ok("tcp://arm.example:2376", true),
            Address::Tls("tcp://arm.example:2376".into())
        );
        assert_eq!(
            ok("https://arm.example:2376/", false),
            Address::Tls("tcp://arm.example:2376".into())
        );
        for bad in [
            "arm.example:2376",
            "tcp://arm.example",
            "tcp://:2376",
            "tcp://arm example:2376",
            "tcp://arm.example:99999",
            "ssh://me@arm.example:22",
            "unix://relative.sock",
        ] {
            let e = Address::parse_with(bad, false).unwrap_err();
            assert!(
                e.to_string().contains(bad) && e.fix().unwrap().contains("tcp://HOST:PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn missing_tls_files_are_named() {
        let dir = std::env::temp_dir().join(format!("gm-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key.pem"), "").unwrap();
        std::env::set_var("DOCKER_CERT_PATH", &dir);
        let e = tls_files("tcp://arm:2376").unwrap_err();
        std::env::remove_var("DOCKER_CERT_PATH");
        std::fs::remove_dir_all(&dir).unwrap();
        let msg = e.to_string();
        assert!(
            msg.starts_with("engine tcp://arm:2376: TLS") && msg.ends_with("cert.pem is missing"),
            "{msg}"
        );
    }
}
