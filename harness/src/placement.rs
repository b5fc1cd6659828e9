//! Where a platform's leg runs on an engine: natively or through which emulator, decided from the engine's architecture, a 32-bit probe and the handlers registered.

use crate::matrix::Platform;
use std::time::Duration;

/// What an engine's host is, as far as placing platforms on it goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Machine {
    /// The engine's architecture, as it reports it (Docker's names: `amd64`, `arm64`).
    pub arch: String,
    /// Whether its kernel accepts the 32-bit personality (`setarch linux32`);
    /// an arm64 CPU without AArch32 does not. None: not probed.
    pub runs_32bit: Option<bool>,
    /// binfmt_misc handlers registered and enabled there. The kernel tries
    /// them before its own formats: a registered `qemu-i386` runs linux/386
    /// through qemu even on an x86_64 CPU.
    pub handlers: Vec<String>,
}

/// How the engine runs a platform's programs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Mode {
    Native,
    Emulated { handler: String },
}

/// The decision for one platform on one engine, and what follows from it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Placement {
    pub platform: String,
    pub engine_arch: String,
    pub mode: Mode,
    /// What `uname -m` says inside its containers there.
    pub uname_m: String,
    /// 1.0 natively, the matrix's `slowdown` under an emulator.
    pub slowdown: f64,
    /// Guix's cache must be on tmpfs (the matrix's `cache_tmpfs`, under qemu only).
    pub cache_tmpfs: bool,
    /// Why, in words: printed by `harness emulators` and in the report.
    pub why: String,
}

impl Placement {
    pub fn is_native(&self) -> bool {
        self.mode == Mode::Native
    }

    /// The binfmt_misc handler the leg needs, if any.
    pub fn handler(&self) -> Option<&str> {
        match &self.mode {
            Mode::Native => None,
            Mode::Emulated { handler } => Some(handler),
        }
    }

    /// A step's timeout there: the native budget times this slowdown.
    pub fn timeout(&self, native: Duration) -> Duration {
        native.mul_f64(self.slowdown.max(1.0))
    }

    /// `native (…)` or `qemu-arm (…)`.
    pub fn summary(&self) -> String {
        let how = self.handler().unwrap_or("native");
        format!("{how} ({})", self.why)
    }
}

/// Docker's name for the architecture this program was built for (`amd64`
/// for x86_64): the local host's, for checks that read its /proc.
pub fn local_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether placing `p` on an engine of `arch` depends on what the host can
/// do (its 32-bit mode, the handlers it has), not on the architecture alone.
pub fn needs_probe(p: &Platform, arch: &str) -> bool {
    p.arch() != arch && p.compat.contains_key(arch)
}

/// How much slower `p` will run on an engine of `arch`, before any probe:
/// what the scheduler orders legs by.
pub fn expected_slowdown(p: &Platform, arch: &str) -> f64 {
    if p.arch() == arch || p.compat.contains_key(arch) {
        1.0
    } else {
        p.slowdown
    }
}

/// Decides how the engine on `host` runs `p`.
pub fn decide(p: &Platform, host: &Machine) -> Placement {
    let arch = host.arch.as_str();
    let native = |uname: &str, why: String| Placement {
        platform: p.docker.clone(),
        engine_arch: arch.to_string(),
        mode: Mode::Native,
        uname_m: uname.to_string(),
        slowdown: 1.0,
        cache_tmpfs: false,
        why,
    };
    let emulated = |why: String| Placement {
        platform: p.docker.clone(),
        engine_arch: arch.to_string(),
        mode: Mode::Emulated {
            handler: p.emulator.clone(),
        },
        uname_m: p.uname_m.clone(),
        slowdown: p.slowdown,
        cache_tmpfs: p.cache_tmpfs,
        why,
    };
    if p.arch() == arch {
        return native(&p.uname_m, "the engine's own architecture".into());
    }
    let Some(uname) = p.compat.get(arch) else {
        return emulated(format!("on an {arch} engine"));
    };
    if host.handlers.contains(&p.emulator) {
        return emulated(format!(
            "{} is registered on this {arch} engine, and the kernel tries binfmt_misc first",
            p.emulator
        ));
    }
    match host.runs_32bit {
        Some(true) => native(uname, format!("an {arch} CPU runs its 32-bit programs")),
        Some(false) => emulated(format!(
            "this {arch} CPU has no 32-bit mode (`setarch linux32` refused)"
        )),
        None => emulated(format!("the {arch} engine's 32-bit mode was not probed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;

    fn matrix() -> Matrix {
        Matrix::load(crate::paths::Checkout::find().unwrap().matrix()).unwrap()
    }

    fn host(arch: &str, runs_32bit: Option<bool>, handlers: &[&str]) -> Machine {
        Machine {
            arch: arch.into(),
            runs_32bit,
            handlers: handlers.iter().map(|h| h.to_string()).collect(),
        }
    }

    /// Each platform of the repository's matrix.toml: `native uname` or the handler.
    fn table(h: &Machine) -> Vec<String> {
        matrix()
            .platforms
            .iter()
            .map(|p| {
                let d = decide(p, h);
                match d.handler() {
                    None => format!("{} native {}", p.docker, d.uname_m),
                    Some(e) => format!("{} {e} {}", p.docker, d.uname_m),
                }
            })
            .collect()
    }

    #[test]
    fn an_x86_64_engine_runs_amd64_and_386_natively() {
        assert_eq!(
            table(&host("amd64", Some(true), &["qemu-arm", "qemu-aarch64"])),
            [
                "linux/amd64 native x86_64",
                "linux/386 native x86_64",
                "linux/arm/v7 qemu-arm armv7l",
                "linux/arm64/v8 qemu-aarch64 aarch64",
                "linux/ppc64le qemu-ppc64le ppc64le",
                "linux/riscv64 qemu-riscv64 riscv64",
            ]
        );
    }

    #[test]
    fn the_same_matrix_on_an_arm64_engine_emulates_the_x86_platforms() {
        assert_eq!(
            table(&host("arm64", Some(true), &[])),
            [
                "linux/amd64 qemu-x86_64 x86_64",
                "linux/386 qemu-i386 i686",
                "linux/arm/v7 native armv8l",
                "linux/arm64/v8 native aarch64",
                "linux/ppc64le qemu-ppc64le ppc64le",
                "linux/riscv64 qemu-riscv64 riscv64",
            ]
        );
    }

    #[test]
    fn an_arm64_cpu_without_aarch32_emulates_arm_v7_with_the_tmpfs_workaround() {
        let m = matrix();
        let arm = m.find("linux/arm/v7").unwrap();
        let d = decide(arm, &host("arm64", Some(false), &[]));
        assert_eq!(d.handler(), Some("qemu-arm"));
        assert!(d.cache_tmpfs && d.slowdown > 1.0, "{d:?}");
        assert!(d.why.contains("no 32-bit mode"), "{}", d.why);
        // Natively (AArch32 present) it needs neither.
        let d = decide(arm, &host("arm64", Some(true), &[]));
        assert!(
            d.is_native() && !d.cache_tmpfs && d.slowdown == 1.0,
            "{d:?}"
        );
    }

    #[test]
    fn a_registered_handler_wins_over_the_cpu_as_in_the_kernel() {
        let m = matrix();
        let i386 = m.find("linux/386").unwrap();
        let d = decide(i386, &host("amd64", Some(true), &["qemu-i386"]));
        assert_eq!(d.handler(), Some("qemu-i386"));
        assert_eq!(d.uname_m, "i686");
        assert!(
            d.cache_tmpfs,
            "32-bit under qemu needs the tmpfs workaround"
        );
    }

    #[test]
    fn other_engines_emulate_everything_but_their_own() {
        assert_eq!(
            table(&host("ppc64le", None, &[])),
            [
                "linux/amd64 qemu-x86_64 x86_64",
                "linux/386 qemu-i386 i686",
                "linux/arm/v7 qemu-arm armv7l",
                "linux/arm64/v8 qemu-aarch64 aarch64",
                "linux/ppc64le native ppc64le",
                "linux/riscv64 qemu-riscv64 riscv64",
            ]
        );
    }

    #[test]
    fn the_order_of_legs_follows_the_engine() {
        let m = matrix();
        let amd64 = m.find("linux/amd64").unwrap();
        let arm64 = m.find("linux/arm64/v8").unwrap();
        assert_eq!(expected_slowdown(amd64, "amd64"), 1.0);
        assert_eq!(expected_slowdown(amd64, "arm64"), amd64.slowdown);
        assert_eq!(expected_slowdown(arm64, "arm64"), 1.0);
        assert!(needs_probe(m.find("linux/arm/v7").unwrap(), "arm64"));
        assert!(!needs_probe(arm64, "amd64"));
    }
}
