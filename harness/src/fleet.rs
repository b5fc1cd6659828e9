//! The engines a run uses: which engine runs each platform's legs (`--engine PLATFORM=URL`), one pipeline per engine, and cleanup on every one of them.

use crate::engine::lease::Held;
use crate::engine::{Address, Engine, EngineError};
use crate::error::{Error, Exit};
use crate::matrix::{Matrix, Platform};
use crate::pipeline::{Options, Pipeline};
use std::collections::BTreeMap;

/// `PLATFORM=URL`: the legs of PLATFORM run on the engine at URL; `URL`
/// alone: the engine of every command and of the platforms no other names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineArg {
    pub platform: Option<String>,
    pub url: String,
}

impl std::str::FromStr for EngineArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((p, u)) if !p.trim().is_empty() && !u.trim().is_empty() => Ok(EngineArg {
                platform: Some(p.trim().to_string()),
                url: u.trim().to_string(),
            }),
            None if s.contains("://") => Ok(EngineArg {
                platform: None,
                url: s.trim().to_string(),
            }),
            _ => Err(format!(
                "`{s}` is not PLATFORM=URL or URL (e.g. linux/arm64/v8=tcp://arm-box:2376, or unix:///run/user/1000/docker.sock)"
            )),
        }
    }
}

/// One pipeline per engine, and which engine each platform's legs use.
pub struct Fleet {
    pipelines: Vec<Pipeline>,
    /// Docker platform -> index in `pipelines` (platforms no --engine
    /// names use the default engine, index 0 when it is connected).
    of: BTreeMap<String, usize>,
    default: Option<usize>,
    /// Each engine's lease on the platforms this run works on there.
    held: Vec<std::sync::Arc<Held>>,
}

impl Fleet {
    /// Checks the assignment, then connects every engine the `selected`
    /// platforms need (each once): the default engine (DOCKER_HOST, else
    /// the local socket) only when some platform has no --engine.
    pub async fn connect(
        matrix: &Matrix,
        options: &Options,
        engines: &[EngineArg],
        selected: &[Platform],
    ) -> Result<Self, Error> {
        let mut assigned: BTreeMap<String, String> = BTreeMap::new();
        for e in engines {
            let Some(platform) = &e.platform else {
                continue;
            };
            let p = matrix.find(platform)?;
            Address::parse(&e.url)?;
            if let Some(first) = assigned.insert(p.docker.clone(), e.url.clone()) {
                return Err(EngineError::Twice {
                    platform: p.docker.clone(),
                    first,
                    second: e.url.clone(),
                }
                .into());
            }
        }
        let default_url = options.engine.clone();
        let mut urls: Vec<String> = vec![];
        let mut of = BTreeMap::new();
        for p in selected {
            let url = assigned.get(&p.docker).unwrap_or(&default_url);
            let i = match urls.iter().position(|u| u == url) {
                Some(i) => i,
                None => {
                    urls.push(url.clone());
                    urls.len() - 1
                }
            };
            of.insert(p.docker.clone(), i);
        }
        let connected = futures::future::join_all(urls.iter().map(|u| Engine::connect_to(u))).await;
        let mut pipelines = vec![];
        for engine in connected {
            pipelines.push(Pipeline::on(engine?, matrix.clone(), options.clone()));
        }
        let default = urls.iter().position(|u| *u == default_url);
        let fleet = Fleet {
            pipelines,
            of,
            default,
            held: vec![],
        };
        for p in selected {
            fleet.pipeline(p).refuse_rollback(p).await?;
        }
        Ok(fleet)
    }

    /// One engine for everything (the default pipeline).
    pub fn single(h: Pipeline) -> Self {
        Fleet {
            pipelines: vec![h],
            of: BTreeMap::new(),
            default: Some(0),
            held: vec![],
        }
    }

    /// The pipeline whose engine runs `platform`'s legs.
    pub fn pipeline(&self, platform: &Platform) -> &Pipeline {
        let i = self
            .of
            .get(&platform.docker)
            .copied()
            .or(self.default)
            .unwrap_or(0);
        &self.pipelines[i]
    }

    /// Decides once, up front, which leg runs the platform-independent
    /// steps for the run: with two platforms or more, the first native one
    /// (the cheapest), else the first selected; with one, that leg runs all.
    pub async fn share_steps(&mut self, selected: &[Platform]) -> Result<Option<String>, Error> {
        let mut chosen = None;
        if selected.len() > 1 {
            for p in selected {
                if self.pipeline(p).placement(p).await?.is_native() {
                    chosen = Some(p.docker.clone());
                    break;
                }
            }
            chosen = chosen.or_else(|| selected.first().map(|p| p.docker.clone()));
        }
        for h in &mut self.pipelines {
            h.options.shared_steps.clone_from(&chosen);
        }
        Ok(chosen)
    }

    /// Every engine's pipeline.
    pub fn all(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// The helpers and probes every engine's pipeline used so far.
    pub fn tools(&self) -> Vec<crate::record::Tool> {
        self.pipelines.iter().flat_map(Pipeline::tools).collect()
    }

    /// Takes a lease per engine on the `selected` platforms it runs (and
    /// its native platform's helper and probes): another process's `clean`
    /// leaves their containers and images alone while this run lives.
    /// Given back by `give_back`, or at the end of the command whatever
    /// ends it.
    pub async fn hold(&mut self, selected: &[Platform]) -> Result<(), Error> {
        for (i, h) in self.pipelines.iter().enumerate() {
            let mut slugs: Vec<String> = selected
                .iter()
                .filter(|p| self.of.get(&p.docker) == Some(&i))
                .map(Platform::slug)
                .chain(h.native_tags().await)
                .collect();
            slugs.sort();
            slugs.dedup();
            self.held.push(Held::take(&h.engine, slugs).await?);
        }
        Ok(())
    }

    /// Gives back every engine's lease (the run is over).
    pub async fn give_back(&self) {
        for held in &self.held {
            held.give_back().await;
        }
    }

    /// After a signal: what this process started is removed on every engine.
    pub async fn clean_after_interrupt(&self, started: i64, signal: i32) -> Exit {
        let name = if signal == 15 { "SIGTERM" } else { "SIGINT" };
        eprintln!("\ninterrupted ({name}): removing the containers this run started");
        for h in &self.pipelines {
            let e = &h.engine;
            let n = e.remove_tracked().await + e.remove_created_since(started).await;
            eprintln!(
                "{}: removed {n} container(s); images being built are not tagged",
                e.url
            );
        }
        self.give_back().await;
        Exit::Interrupted(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_arguments_are_platform_equals_url() {
        let e: EngineArg = "linux/arm64/v8=tcp://arm:2376".parse().unwrap();
        assert_eq!(e.platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(e.url, "tcp://arm:2376");
        let e: EngineArg = "tcp://arm:2376".parse().unwrap();
        assert_eq!((e.platform, e.url.as_str()), (None, "tcp://arm:2376"));
        for bad in ["arm", "=tcp://arm:2376", "linux/386="] {
            let msg = bad.parse::<EngineArg>().unwrap_err();
            assert!(msg.contains("is not PLATFORM=URL or URL"), "{bad}: {msg}");
        }
    }
}
