//! How a run shows itself: spinners on a terminal, one plain line per step (and a heartbeat) elsewhere.

use crate::leg::Watch;
use crate::matrix::Platform;
use crate::report::Leg;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A watch that also keeps the legs that finished (for a report after an interrupt).
pub struct Progress {
    started: Instant,
    view: View,
    /// platform -> (current step, since when).
    steps: Mutex<HashMap<String, (String, Instant)>>,
    finished: Mutex<Vec<Leg>>,
}

enum View {
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
    Lines,
    /// `-q`: no progress at all (the table and the report still say everything).
    Quiet,
}

impl Progress {
    /// Spinners when stderr is a terminal, plain lines otherwise; nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        let view = if quiet {
            View::Quiet
        } else if std::io::stderr().is_terminal() {
            View::Bars {
                multi: MultiProgress::new(),
                bars: Mutex::default(),
            }
        } else {
            View::Lines
        };
        Progress {
            started: Instant::now(),
            view,
            steps: Mutex::default(),
            finished: Mutex::default(),
        }
    }

    /// The legs that ended so far.
    pub fn finished(&self) -> Vec<Leg> {
        self.finished.lock().expect("finished lock").clone()
    }

    /// Where each unfinished leg is: (platform, step).
    pub fn unfinished(&self) -> Vec<(String, String)> {
        let done: Vec<String> = self.finished().into_iter().map(|l| l.platform).collect();
        let mut open: Vec<(String, String)> = self
            .steps
            .lock()
            .expect("steps lock")
            .iter()
            .filter(|(p, _)| !done.contains(p))
            .map(|(p, (s, _))| (p.clone(), s.clone()))
            .collect();
        open.sort();
        open
    }

    /// Without a terminal: one line per running leg saying how long its step
    /// has taken, so a long leg is never silent. Nothing on a terminal.
    pub fn heartbeat(&self) {
        if !matches!(self.view, View::Lines) {
            return;
        }
        for (platform, step) in self.unfinished() {
            let since = self.steps.lock().expect("steps lock")[&platform].1;
            eprintln!(
                "[{:>5}s] {platform}: still in `{step}` ({}s)",
                self.started.elapsed().as_secs(),
                since.elapsed().as_secs()
            );
        }
    }

    fn bar(&self, platform: &str) -> Option<ProgressBar> {
        let View::Bars { multi, bars } = &self.view else {
            return None;
        };
        let mut bars = bars.lock().expect("bars lock");
        let bar = bars.entry(platform.to_string()).or_insert_with(|| {
            let style =
                ProgressStyle::with_template("{spinner} {prefix:16} {elapsed:>4} {wide_msg}")
                    .expect("progress template");
            let bar = multi.add(
                ProgressBar::new_spinner()
                    .with_style(style)
                    .with_prefix(platform.to_string()),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Some(bar.clone())
    }
}

impl Watch for Progress {
    fn step(&self, platform: &Platform, step: &str) {
        self.steps
            .lock()
            .expect("steps lock")
            .insert(platform.docker.clone(), (step.to_string(), Instant::now()));
        match self.bar(&platform.docker) {
            Some(bar) => bar.set_message(step.to_string()),
            None if matches!(self.view, View::Quiet) => {}
            None => eprintln!(
                "[{:>5}s] {}: {step}",
                self.started.elapsed().as_secs(),
                platform.docker
            ),
        }
    }

    fn finished(&self, leg: &Leg) {
        let line = format!("{} in {:.0?}", leg.result(), leg.elapsed);
        match self.bar(&leg.platform) {
            Some(bar) => bar.finish_with_message(line),
            None if matches!(self.view, View::Quiet) => {}
            None => eprintln!(
                "[{:>5}s] {}: {line}",
                self.started.elapsed().as_secs(),
                leg.platform
            ),
        }
        self.finished
            .lock()
            .expect("finished lock")
            .push(leg.clone());
    }
}
