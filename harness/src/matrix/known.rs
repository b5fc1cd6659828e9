//! The platforms the harness knows: for each Docker platform, the one Guix system, Debian architecture, `uname -m` and qemu handler that describe the same machine.

/// One known platform.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub docker: &'static str,
    pub guix_system: &'static str,
    pub debian_arch: &'static str,
    /// What `uname -m` says on its own kernel and under qemu.
    pub uname_m: &'static str,
    /// qemu-user-static's handler for it, on an engine that cannot run it.
    pub qemu: &'static str,
    /// Other engine architectures whose CPUs run it natively (32-bit modes),
    /// and what `uname -m` says there.
    pub compat: &'static [(&'static str, &'static str)],
    /// Debian's cross compiler for the readdir() probe.
    pub probe_cc: &'static str,
}

pub const KNOWN: &[Known] = &[
    Known {
        docker: "linux/amd64",
        guix_system: "x86_64-linux",
        debian_arch: "amd64",
        uname_m: "x86_64",
        qemu: "qemu-x86_64",
        compat: &[],
        probe_cc: "x86_64-linux-gnu-gcc",
    },
    Known {
        docker: "linux/386",
        guix_system: "i686-linux",
        debian_arch: "i386",
        uname_m: "i686",
        qemu: "qemu-i386",
        compat: &[("amd64", "x86_64")],
        probe_cc: "i686-linux-gnu-gcc",
    },
    Known {
        docker: "linux/arm/v7",
        guix_system: "armhf-linux",
        debian_arch: "armhf",
        uname_m: "armv7l",
        qemu: "qemu-arm",
        compat: &[("arm64", "armv8l")],
        probe_cc: "arm-linux-gnueabihf-gcc",
    },
    Known {
        docker: "linux/arm64/v8",
        guix_system: "aarch64-linux",
        debian_arch: "arm64",
        uname_m: "aarch64",
        qemu: "qemu-aarch64",
        compat: &[],
        probe_cc: "aarch64-linux-gnu-gcc",
    },
    Known {
        docker: "linux/ppc64le",
        guix_system: "powerpc64le-linux",
        debian_arch: "ppc64el",
        uname_m: "ppc64le",
        qemu: "qemu-ppc64le",
        compat: &[],
        probe_cc: "powerpc64le-linux-gnu-gcc",
    },
    Known {
        docker: "linux/riscv64",
        guix_system: "riscv64-linux",
        debian_arch: "riscv64",
        uname_m: "riscv64",
        qemu: "qemu-riscv64",
        compat: &[],
        probe_cc: "riscv64-linux-gnu-gcc",
    },
];

/// The known platform `docker` names (`linux/arm64` is `linux/arm64/v8`).
pub fn find(docker: &str) -> Option<&'static Known> {
    let docker = if docker == "linux/arm64" {
        "linux/arm64/v8"
    } else {
        docker
    };
    KNOWN.iter().find(|k| k.docker == docker)
}

/// The known Docker platforms, for messages.
pub fn names() -> String {
    KNOWN
        .iter()
        .map(|k| k.docker)
        .collect::<Vec<_>>()
        .join(", ")
}
