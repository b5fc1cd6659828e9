//! `harness rebuild --check`: a release's images rebuilt from this checkout and the release's own base, every stage anew, and compared with the release's bits.

use super::Context;
use crate::engine::{build::Inputs, Engine};
use crate::error::{Error, Exit};
use crate::matrix::{Matrix, Platform};
use crate::names;
use crate::pipeline::{Pipeline, Rebuild};
use crate::pull::{By, Want};
use crate::release::open::{self, OpenError, Part, Release};
use crate::release::rebuild::{compare, saved};
use crate::release::reuse::ReuseError;
use crate::release::source::Source;

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Compare the rebuilt images with the release's (what a rebuild is for:
    /// it ships nothing).
    #[arg(long, required = true, help_heading = "Selection")]
    pub check: bool,
    /// The release: a directory (DIR, or DIR@sha256:… pinning its SHA256SUMS)
    /// or a registry reference (REF, or REF@sha256:… pinning its index).
    #[arg(value_name = "DIR|REF", value_parser = crate::release::source::parse_arg)]
    pub source: Source,
    /// Rebuild this platform (repeat for more); default: every platform of
    /// the matrix that the release has.
    #[arg(long = "platform", value_name = "PLATFORM", help_heading = "Selection")]
    pub platforms: Vec<String>,
    /// The release whose pulled generation the release's pull started from
    /// (its pull label names it), vouched for by the same keys; from a
    /// registry, default: that tag of the same repository.
    #[arg(long, value_name = "DIR|REF", value_parser = crate::release::source::parse_arg, help_heading = "Selection")]
    pub from: Option<Source>,
    /// Also write what the rebuild found as a Markdown section (for a
    /// release's notes).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub notes: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub trust: super::TrustKeys,
    #[command(flatten)]
    pub build: super::BuildArgs,
    #[command(flatten)]
    pub workspace: super::Workspace,
}

impl RebuildArgs {
    pub async fn exec(self, ctx: &Context) -> Result<Exit, Error> {
        let keys = self.trust.load(ctx)?;
        let release = open::open(&self.source, &keys).await?;
        let matrix = rebuild_matrix(&ctx.matrix);
        let platforms: Vec<Platform> = if !self.platforms.is_empty() {
            self.platforms
                .iter()
                .map(|p| ctx.matrix.find(p).cloned())
                .collect::<Result<_, _>>()?
        } else {
            ctx.matrix.platforms.clone()
        };
        let engine = Engine::connect_to(&ctx.options.engine).await?;
        // Its containers are a live run's: `clean` leaves them alone.
        crate::engine::lease::Held::take(&engine, platforms.iter().map(Platform::slug).collect())
            .await?;
        share_helpers(&engine, &ctx.matrix, &matrix).await?;
        let from = Earlier {
            given: self.from.clone(),
            keys,
        };
        let outcome = self
            .each(ctx, &matrix, &engine, (&release, &from), &platforms)
            .await;
        forget(&engine, &matrix).await;
        outcome
    }

    /// Rebuilds and compares each platform in turn: what it says, and the exit.
    async fn each(
        &self,
        ctx: &Context,
        matrix: &Matrix,
        engine: &Engine,
        (release, from): (&Release, &Earlier),
        platforms: &[Platform],
    ) -> Result<Exit, Error> {
        let asked = !self.platforms.is_empty();
        let mut differs = vec![];
        let mut found = vec![];
        let mut checked = 0;
        for p in platforms {
            let started = std::time::Instant::now();
            let outcome = one(ctx, matrix, engine, (release, from), p).await;
            let comparison = match outcome {
                Err(Error::Open(OpenError::NotInRelease { .. })) if !asked => {
                    println!("{}: not in {}", p.docker, release.name());
                    continue;
                }
                other => other?,
            };
            checked += 1;
            let line = format!(
                "{}: {} ({:.0} s)",
                p.docker,
                comparison,
                started.elapsed().as_secs_f64()
            );
            println!("{line}");
            found.push(line);
            if !comparison.identical() {
                differs.push(p.docker.clone());
            }
        }
        if checked == 0 {
            return Err(Error::Open(OpenError::NotInRelease {
                dir: self.source.to_string().into(),
                platform: "any platform of the matrix".into(),
                slug: "*".into(),
            }));
        }
        if let Some(path) = &self.notes {
            let text = notes(&self.source, release, &found, differs.is_empty());
            std::fs::write(path, text).map_err(|source| Error::Output {
                path: path.clone(),
                source,
            })?;
        }
        Ok(if differs.is_empty() {
            Exit::Success
        } else {
            eprintln!(
                "rebuild of {}: not the same bits on {}",
                release.name(),
                differs.join(", ")
            );
            Exit::LegsFailed
        })
    }
}

/// The matrix a rebuild builds with: its own tags (the engine's images of
/// the tree stay as they are), and the release's base taken at any age.
fn rebuild_matrix(matrix: &Matrix) -> Matrix {
    let mut m = matrix.clone();
    // Per process: two rebuilds on one engine never share a tag.
    m.defaults.image = format!("{}-rebuild{}", m.defaults.image, std::process::id());
    m.defaults.max_base_age_days = 36_500;
    m
}

/// What a rebuild's notes say: the command, and each platform's finding.
fn notes(source: &Source, release: &Release, found: &[String], identical: bool) -> String {
    let verdict = if identical {
        "the same bits"
    } else {
        "**not** the same bits"
    };
    format!(
        "## Rebuilt from its tree\n\n`harness rebuild --check {source}`, from this release's revision and base: {verdict} as {}.\n\n```\n{}\n```\n",
        release.name(),
        found.join("\n")
    )
}

/// The release a rebuilt release's pull started from: as given by
/// `--from`, or looked up in the same registry.
struct Earlier {
    given: Option<Source>,
    keys: crate::release::trust::Keys,
}

impl Earlier {
    /// Release `started`, vouched for: the one `--from` gives (it must be
    /// that release), else the same repository's tag of that name.
    async fn open(
        &self,
        of: &Release,
        platform: &Platform,
        started: &str,
    ) -> Result<Release, Error> {
        let wrong = |given: Option<String>| ReuseError::PulledFrom {
            platform: platform.docker.clone(),
            started: started.to_string(),
            given,
        };
        let source = match (&self.given, &of.source) {
            (Some(s), _) => s.clone(),
            (None, Source::Registry { reference, .. }) => Source::Registry {
                reference: crate::registry::Reference {
                    tag: Some(started.to_string()),
                    ..reference.clone()
                },
                pin: None,
            },
            (None, Source::Dir { .. }) => return Err(wrong(None).into()),
        };
        let earlier = open::open(&source, &self.keys).await?;
        if earlier.name() != started {
            return Err(wrong(Some(earlier.name())).into());
        }
        Ok(earlier)
    }
}

/// Rebuilds `platform` of `release` and compares it with the release's image.
async fn one(
    ctx: &Context,
    matrix: &Matrix,
    engine: &Engine,
    (release, from): (&Release, &Earlier),
    platform: &Platform,
) -> Result<crate::release::rebuild::Comparison, Error> {
    let d = &matrix.defaults;
    let theirs = engine_tag(matrix, platform);
    let img = release
        .fetch(engine, platform, &theirs, Part::Image)
        .await?;
    let label = |k: &str| img.labels.get(k).cloned().unwrap_or_default();
    let pulled = label(names::LABEL_PULLED);
    let (want, by) = match pulled.split_once(' ').map(|(by, _)| by) {
        Some("stand-in") => (Want::Pull(By::StandIn), Some(By::StandIn)),
        Some("guix") => (Want::Pull(By::GuixPull), Some(By::GuixPull)),
        _ => (Want::Skip("the release ships it unpulled".into()), None),
    };
    let mut options = ctx.options.clone();
    options.pull = want;
    let mut rebuild = Rebuild {
        base_provenance: [(platform.docker.clone(), label("io.guix-matrix.base"))].into(),
        generation: Default::default(),
    };
    let pulled = crate::pull::Pulled::of(&img.labels).ok().flatten();
    if let Some(started) = pulled.as_ref().and_then(|p| p.started_from_release()) {
        let earlier = from.open(release, platform, started).await?;
        let tag = format!("{}-from:{}", d.image, platform.slug());
        earlier.fetch(engine, platform, &tag, Part::Image).await?;
        rebuild
            .generation
            .insert(platform.docker.clone(), (tag, started.to_string()));
    }
    options.rebuild = Some(rebuild);
    let h = Pipeline::on(engine.clone(), matrix.clone(), options);
    let ours = h.inputs(platform, by)?;
    if img.inputs() != Some(ours.hash.as_str()) {
        let changed = Inputs::from_labels(&img.labels)
            .map(|theirs| ours.changed_since(&theirs).join(", "))
            .unwrap_or_else(|why| format!("inputs ({why})"));
        return Err(ReuseError::OtherTree {
            platform: platform.docker.clone(),
            release: release.name(),
            changed,
            revision: label("org.opencontainers.image.revision"),
        }
        .into());
    }
    release
        .fetch(engine, platform, &names::base(d, platform), Part::Base)
        .await?;
    let prepared = h.prepare(platform).await?;
    let (a, b) = tokio::try_join!(saved(engine, &theirs), saved(engine, &prepared.image.tag))?;
    Ok(compare(&a, &b))
}

/// Where the release's image waits to be compared.
fn engine_tag(matrix: &Matrix, platform: &Platform) -> String {
    format!("{}-release:{}", matrix.defaults.image, platform.slug())
}

/// The engine's emulator helpers, under the rebuild's names (a helper is
/// no part of what is compared; building another would need a base).
async fn share_helpers(engine: &Engine, matrix: &Matrix, rebuild: &Matrix) -> Result<(), Error> {
    for p in &matrix.platforms {
        let ours = names::binfmt_helper(&matrix.defaults, p);
        if let Some(img) = engine.local_image(&ours).await? {
            engine
                .tag(&img.id, &names::binfmt_helper(&rebuild.defaults, p))
                .await?;
        }
    }
    Ok(())
}

/// Every tag the rebuild made (its images with them), removed: the engine
/// keeps only what it had.
async fn forget(engine: &Engine, matrix: &Matrix) {
    let image = &matrix.defaults.image;
    let Ok(tags) = engine.tags().await else {
        return;
    };
    for tag in tags.keys() {
        if tag.starts_with(&format!("{image}:")) || tag.starts_with(&format!("{image}-")) {
            engine.remove_image(tag).await;
        }
    }
}
