//! Logins: how a registry's challenge is answered, and where a login may travel.

use super::reference::is_loopback;
use std::time::Duration;

/// How a registry's 401 challenge asks to be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Auth {
    /// The login itself, on the registry's own connection.
    Basic,
    /// A token from `realm` (an https URL, or http on a loopback address).
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Reads a `WWW-Authenticate` challenge; refuses what would send a login
/// in clear: a token realm that is plain http off the loopback (its host is
/// where the login goes). Basic goes to the registry itself, which is
/// spoken to over https unless it is on the loopback.
pub fn auth_for(challenge: &str) -> Result<Auth, String> {
    let field = |name: &str| {
        regex::Regex::new(&format!(r#"{name}="([^"]*)""#))
            .expect("regex")
            .captures(challenge)
            .map(|c| c[1].to_string())
    };
    let scheme = challenge.split_whitespace().next().unwrap_or_default();
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Auth::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!(
            "the registry wants a login it does not describe: `{challenge}`"
        ));
    }
    let realm = field("realm")
        .ok_or_else(|| format!("the registry wants a login it does not describe: `{challenge}`"))?;
    let not_url = || format!("the registry's token realm `{realm}` is not a URL");
    let uri: ureq::http::Uri = realm.parse().map_err(|_| not_url())?;
    let authority = uri.authority().ok_or_else(not_url)?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "the registry's token realm `{realm}` carries a user name: refused (a login goes only to the host it is for)"
        ));
    }
    let loopback = is_loopback(authority.as_str());
    match uri.scheme_str().unwrap_or_default() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "the registry sends the login to `{realm}`, which is not https: refused (a login never travels in clear)"
            ))
        }
    }
    Ok(Auth::Bearer {
        realm,
        service: field("service"),
    })
}

/// The registry host the command itself pushes to (`release --push`): the
/// host GUIX_MATRIX_REGISTRY_USER/_TOKEN log in to when
/// GUIX_MATRIX_REGISTRY_HOST names none.
static PUSH_HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Says which host the command pushes to (see [`basic_login`]).
pub fn pushing_to(host: &str) {
    let _ = PUSH_HOST.set(host.to_ascii_lowercase());
}

/// The host the harness's own login variables are for:
/// GUIX_MATRIX_REGISTRY_HOST, else the host `release --push` names.
fn variables_host() -> Option<String> {
    std::env::var("GUIX_MATRIX_REGISTRY_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .map(|h| h.to_ascii_lowercase())
        .or_else(|| PUSH_HOST.get().cloned())
}

/// The login for `host`, base64 `user:secret`: GUIX_MATRIX_REGISTRY_USER /
/// _TOKEN when set and `host` is the one they are for (see
/// [`variables_host`]; any other registry never sees them), else what
/// `docker login` stored for `host` itself in the docker CLI's config.
pub fn basic_login(host: &str) -> Option<String> {
    use base64::Engine as _;
    if let (Ok(user), Ok(pass), Some(scope)) = (
        std::env::var("GUIX_MATRIX_REGISTRY_USER"),
        std::env::var("GUIX_MATRIX_REGISTRY_TOKEN"),
        variables_host(),
    ) {
        if same_host(&scope, host) {
            return Some(
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")),
            );
        }
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))?;
    docker_login(&dir, host, None)
}

/// Whether two registry hosts are one (Docker Hub's names are one registry).
fn same_host(a: &str, b: &str) -> bool {
    let hub = |h: &str| match h {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
            "registry-1.docker.io".to_string()
        }
        h => h.to_ascii_lowercase(),
    };
    hub(a) == hub(b)
}

/// What `docker login` left for `host` in the docker CLI's config in
/// `dir`, as the CLI looks it up: its credential helper for the host
/// (`credHelpers`), else the default store (`credsStore`), else `auths`.
/// Helpers are `docker-credential-NAME` on PATH (or in `helpers`).
fn docker_login(
    dir: &std::path::Path,
    host: &str,
    helpers: Option<&std::path::Path>,
) -> Option<String> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let key = if host == "registry-1.docker.io" {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let helper = config["credHelpers"][key]
        .as_str()
        .or(config["credsStore"].as_str())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        let program = format!("docker-credential-{helper}");
        let program = helpers.map_or_else(|| program.clone().into(), |d| d.join(&program));
        if let Some((user, secret)) = credential_helper(&program, key) {
            return Some(
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}")),
            );
        }
    }
    config["auths"][key]["auth"].as_str().map(str::to_string)
}

/// `PROGRAM get` with the server on stdin (the credential-helper protocol),
/// within 30 s; an identity token (`<token>`) is not a login.
fn credential_helper(program: &std::path::Path, server: &str) -> Option<(String, String)> {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(server.as_bytes()).ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            tracing::warn!("{}: no answer in 30 s; no login from it", program.display());
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let user = v["Username"].as_str()?.to_string();
    let secret = v["Secret"].as_str()?.to_string();
    (user != "<token>").then_some((user, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_come_from_the_docker_clis_helpers_then_its_auths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread -r server\n[ \"$1\" = get ] && printf '{\"ServerURL\":\"%s\",\"Username\":\"bot\",\"Secret\":\"s3cret\"}' \"$server\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"ghcr.io":{"auth":"Z2hjcjpwYXNz"},"quay.io":{"auth":"cXVheTpwYXNz"}},"credHelpers":{"ghcr.io":"test"}}"#,
        )
        .unwrap();
        use base64::Engine as _;
        let decode = |s: String| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
        };
        let login = |host| docker_login(dir.path(), host, Some(dir.path())).map(decode);
        assert_eq!(
            login("ghcr.io").as_deref(),
            Some("bot:s3cret"),
            "its helper first"
        );
        assert_eq!(login("quay.io").as_deref(), Some("quay:pass"), "else auths");
        assert_eq!(login("example.org"), None);
    }

    #[test]
    fn a_login_never_travels_in_clear() {
        assert_eq!(
            auth_for(r#"Bearer realm="https://ghcr.io/token",service="ghcr.io""#),
            Ok(Auth::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into())
            })
        );
        let e = auth_for(r#"Bearer realm="http://evil.example/token""#).unwrap_err();
        assert!(e.contains("not https: refused"), "{e}");
        assert!(auth_for(r#"Bearer service="x""#).is_err());
        assert!(auth_for("Negotiate").is_err());
        // A Basic challenge is answered with Basic auth, never used as a URL.
        assert_eq!(auth_for(r#"Basic realm="Registry Realm""#), Ok(Auth::Basic));
        assert!(matches!(
            auth_for(r#"Bearer realm="http://127.0.0.1:5001/auth""#),
            Ok(Auth::Bearer { .. })
        ));
        // Plain http only when the host *is* a loopback address.
        for realm in [
            "http://127.0.0.1.evil.example/token",
            "http://127.evil.example/token",
            "http://[::2]/token",
            "http://localhost.evil.example:80/token",
        ] {
            let e = auth_for(&format!(r#"Bearer realm="{realm}""#)).unwrap_err();
            assert!(e.contains("not https: refused"), "{realm}: {e}");
        }
        for realm in [
            "http://[::1]:5000/token",
            "http://localhost/token",
            "http://127.0.0.2/t",
        ] {
            assert!(
                auth_for(&format!(r#"Bearer realm="{realm}""#)).is_ok(),
                "{realm}"
            );
        }
        // A user name in the realm (`127.0.0.1@evil.example`) never passes as loopback.
        let e = auth_for(r#"Bearer realm="http://127.0.0.1@evil.example/token""#).unwrap_err();
        assert!(e.contains("carries a user name"), "{e}");
    }

    #[test]
    fn the_harness_login_goes_only_to_the_host_it_names() {
        std::env::set_var("GUIX_MATRIX_REGISTRY_USER", "bot");
        std::env::set_var("GUIX_MATRIX_REGISTRY_TOKEN", "s3cret");
        std::env::set_var("GUIX_MATRIX_REGISTRY_HOST", "ghcr.io");
        std::env::set_var("DOCKER_CONFIG", "/nonexistent");
        let ours = basic_login("ghcr.io");
        let theirs = basic_login("evil.example");
        std::env::remove_var("GUIX_MATRIX_REGISTRY_HOST");
        let unscoped = basic_login("ghcr.io");
        for v in ["USER", "TOKEN"] {
            std::env::remove_var(format!("GUIX_MATRIX_REGISTRY_{v}"));
        }
        std::env::remove_var("DOCKER_CONFIG");
        assert!(ours.is_some(), "the named host gets the login");
        assert_eq!(theirs, None, "another registry never sees it");
        assert_eq!(
            unscoped, None,
            "with no host named (and no push), nobody gets it"
        );
        assert!(same_host("docker.io", "registry-1.docker.io"));
    }
}
