//! What the machine is and has: the engine's architecture, its 32-bit mode, the native platform and base, the emulator helper and its handlers, the readdir() probes, and where each platform runs.

use super::Pipeline;
use crate::base;
use crate::emulators;
use crate::engine::{build, run, LocalImage};
use crate::error::Error;
use crate::matrix::Platform;
use crate::names;
use crate::placement::{self, Machine, Placement};
use crate::recipe;
use crate::record::{Tool, ToolRole};
use crate::release::open;
use std::collections::HashMap;
use std::time::Duration;

impl Pipeline {
    /// The engine's architecture, as it reports it (`amd64`, `arm64`).
    pub async fn arch(&self) -> Result<&String, Error> {
        self.arch
            .get_or_try_init(|| async { Ok::<_, Error>(self.engine.arch().await?) })
            .await
    }

    /// What the engine's host can run, as far as `platforms` need to know:
    /// its architecture, and where one of them may run natively in a 32-bit
    /// mode, whether it does (probed once) and which handlers take it first.
    pub async fn host(&self, platforms: &[Platform]) -> Result<Machine, Error> {
        let arch = self.arch().await?.clone();
        let compat = platforms.iter().any(|p| placement::needs_probe(p, &arch));
        let (runs_32bit, handlers) = if compat {
            let (yes, handlers) = self.compat_probe().await?;
            (Some(*yes), handlers.clone())
        } else {
            (None, vec![])
        };
        Ok(Machine {
            arch,
            runs_32bit,
            handlers,
        })
    }

    /// Whether the kernel takes the 32-bit personality (`setarch linux32`
    /// in the native base), and which of the matrix's compat handlers are
    /// registered and enabled.
    pub(super) async fn compat_probe(&self) -> Result<&(bool, Vec<String>), Error> {
        self.compat
            .get_or_try_init(|| async {
                let arch = self.arch().await?.clone();
                // The helper is the native base with qemu: its setarch asks.
                let helper = self.helper().await?;
                let native = self.native_platform().await?;
                let probe = run::RunSpec::new(helper, "probe the 32-bit mode")
                    .entrypoint(["setarch"])
                    .platform(&native.docker)
                    .cmd(["linux32", "true"])
                    .timeout(Duration::from_secs(60));
                let yes = run::run(&self.engine, &probe).await?.exit_code == 0;
                let names: Vec<String> = self
                    .matrix
                    .platforms
                    .iter()
                    .filter(|p| placement::needs_probe(p, &arch))
                    .map(|p| p.emulator.clone())
                    .collect();
                let handlers = emulators::helper_run(&self.engine, helper, "status", &names)
                    .await?
                    .into_iter()
                    .filter(|h| h.state == "registered" || h.state == "wrong")
                    .map(|h| h.name)
                    .collect();
                Ok((yes, handlers))
            })
            .await
    }

    /// How this engine runs `platform`.
    pub async fn placement(&self, platform: &Platform) -> Result<Placement, Error> {
        let host = self.host(std::slice::from_ref(platform)).await?;
        Ok(placement::decide(platform, &host))
    }

    /// Every platform of the matrix placed on this engine.
    pub async fn placements(&self) -> Result<Vec<Placement>, Error> {
        let host = self.host(&self.matrix.platforms).await?;
        Ok(self
            .matrix
            .platforms
            .iter()
            .map(|p| placement::decide(p, &host))
            .collect())
    }

    /// The platform this engine runs natively, with its base image.
    pub async fn native(&self) -> Result<&(Platform, base::Base), Error> {
        self.native
            .get_or_try_init(|| async {
                let platform = self.native_platform().await?;
                let base = base::ensure(
                    &self.engine,
                    &self.matrix.defaults,
                    &platform,
                    self.options.allow_pull,
                )
                .await?;
                Ok((platform, base))
            })
            .await
    }

    /// The readdir() probe for every `probe_cc` of the matrix: shipped with
    /// the run's release when it carries this tree's (no base, no cross
    /// compilers to fetch), else built on the native base of the probe suite.
    pub async fn probes(&self) -> Result<&HashMap<String, Vec<u8>>, Error> {
        let (probes, _) = self
            .probes
            .get_or_try_init(|| async {
                let native = self.native_platform().await?;
                let root = &self.options.checkout.root;
                let spec = recipe::probe_spec(&self.matrix, root, &native);
                if let Some(release) = self.vouched().await? {
                    if let Some((key, probes)) = release.probes()? {
                        if key == recipe::probes_key(&self.matrix, root, &native)? {
                            tracing::info!("readdir probes: from release {}", release.name());
                            let mut tool = self.tool(ToolRole::Probes, spec.tag, None);
                            tool.from = Some(release.name().to_string());
                            return Ok::<_, Error>((probes, tool));
                        }
                        tracing::info!(
                            "readdir probes: release {}'s are of other inputs; building",
                            release.name()
                        );
                    }
                }
                let d = &self.matrix.defaults;
                base::ensure_suite(
                    &self.engine,
                    d,
                    &native,
                    &d.probe_suite,
                    self.options.allow_pull,
                )
                .await?;
                let built = build::build(&self.engine, &spec, &|_| {}).await?;
                let tar = run::copy_out(&self.engine, &built.id, "/probes").await?;
                let probes = crate::release::archive::probes_of(tar.as_slice())
                    .map_err(Error::ProbeArchive)?;
                Ok((
                    probes,
                    self.tool(ToolRole::Probes, built.tag, Some(built.id)),
                ))
            })
            .await?;
        Ok(probes)
    }

    /// The helper and probes this pipeline used so far, as a report records them.
    pub fn tools(&self) -> Vec<Tool> {
        let helper = self.helper.get().cloned();
        let probes = self.probes.get().map(|(_, t)| t.clone());
        helper.into_iter().chain(probes).collect()
    }

    /// A tool image of this pipeline's engine.
    fn tool(&self, role: ToolRole, image: String, id: Option<String>) -> Tool {
        Tool {
            role,
            engine: self.engine.url.clone(),
            image,
            id,
            from: None,
        }
    }

    /// The tag parts of this engine's own tool images, which a run's lease
    /// must cover: the native platform's slug (its helper and probes) and,
    /// when the probes use another suite, that suite's base
    /// (`amd64-bookworm`). Asked apart from the pipeline's cached facts: a
    /// leg's own first question to the engine stays its own.
    pub async fn native_tags(&self) -> Vec<String> {
        let Ok(arch) = self.engine.arch().await else {
            return vec![];
        };
        let Some(native) = self.matrix.native(&arch) else {
            return vec![];
        };
        let d = &self.matrix.defaults;
        let mut tags = vec![native.slug()];
        if d.probe_suite != d.suite {
            tags.push(names::suite_slug(native, &d.probe_suite));
        }
        tags
    }

    /// The platform this engine runs natively (no base needed).
    pub async fn native_platform(&self) -> Result<Platform, Error> {
        let arch = self.arch().await?.clone();
        self.matrix
            .native(&arch)
            .cloned()
            .ok_or_else(|| Error::NoNativePlatform {
                path: self.matrix.path.clone(),
                engine: self.engine.url.clone(),
                arch,
            })
    }

    /// The emulator helper image of this tree: the engine's when up to
    /// date, else the one shipped with the run's release (an empty engine
    /// then needs no base and no mirror), else built on the native base.
    pub async fn helper(&self) -> Result<&String, Error> {
        let tool = self
            .helper
            .get_or_try_init(|| async {
                let native = self.native_platform().await?;
                let spec = recipe::helper_spec(&self.matrix, &self.options.checkout.root, &native);
                let want = build::inputs(&spec)?.hash;
                let ours = |img: &LocalImage| img.has_inputs(&want);
                let used = |id: String| self.tool(ToolRole::Helper, spec.tag.clone(), Some(id));
                if let Some(img) = self.engine.up_to_date(&spec.tag, &want).await? {
                    return Ok::<_, Error>(used(img.id));
                }
                if let Some(release) = self.vouched().await? {
                    match release
                        .fetch(&self.engine, &native, &spec.tag, open::Part::Helper)
                        .await
                    {
                        Ok(img) if ours(&img) => {
                            tracing::info!("emulator helper: from release {}", release.name());
                            return Ok::<_, Error>(used(img.id));
                        }
                        Ok(_) => tracing::info!(
                            "emulator helper: release {}'s is of other inputs; building",
                            release.name()
                        ),
                        Err(open::OpenError::NotInRelease { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                self.native().await?;
                Ok(used(build::build(&self.engine, &spec, &|_| {}).await?.id))
            })
            .await?;
        Ok(&tool.image)
    }

    /// The handlers the matrix needs as the kernel has them now, changing
    /// nothing (the helper only reads binfmt_misc).
    pub async fn handler_status(&self) -> Result<Vec<emulators::Handler>, Error> {
        let names = emulators::needed(&self.placements().await?);
        if names.is_empty() {
            return Ok(vec![]);
        }
        let helper = self.helper().await?;
        Ok(emulators::helper_run(&self.engine, helper, "status", &names).await?)
    }

    /// Unregisters every handler the matrix needs from the engine's host,
    /// returning them as the kernel has them after.
    pub async fn unregister_emulators(&self) -> Result<Vec<emulators::Handler>, Error> {
        let names = emulators::needed(&self.placements().await?);
        if names.is_empty() {
            return Ok(vec![]);
        }
        let helper = self.helper().await?;
        Ok(emulators::helper_run(&self.engine, helper, "unregister", &names).await?)
    }

    /// Registers every emulator the matrix needs (once), returning the handlers.
    pub async fn emulators(&self) -> Result<&Vec<emulators::Handler>, Error> {
        self.handlers
            .get_or_try_init(|| async {
                let placements = self.placements().await?;
                let helper = self.helper().await?;
                let statuses = emulators::register(&self.engine, helper, &placements).await?;
                Ok(statuses.into_iter().filter_map(|s| s.handler).collect())
            })
            .await
    }
}
