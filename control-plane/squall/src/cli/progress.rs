//! Progress bars on stderr, drawn only when stderr is a terminal.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use squall_engine::{JobEvent, ProgressSink};

/// One bar per running stage ("stage k/n"): tasks done of total, and bytes read so far.
pub struct ProgressBars {
    multi: MultiProgress,
    stages: Mutex<HashMap<u32, (ProgressBar, u64)>>,
}

impl ProgressBars {
    /// None when stderr is not a terminal (pipes and CI get no bars).
    pub fn for_stderr() -> Option<Arc<Self>> {
        std::io::stderr().is_terminal().then(|| {
            Arc::new(Self {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                stages: Mutex::new(HashMap::new()),
            })
        })
    }

    pub fn clear(&self) {
        let _ = self.multi.clear();
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} tasks {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl ProgressSink for ProgressBars {
    fn on_event(&self, event: &JobEvent) {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            JobEvent::StageStarted {
                stage, of, tasks, ..
            } => {
                let bar = self.multi.add(ProgressBar::new(*tasks as u64));
                bar.set_style(style());
                bar.set_prefix(format!("stage {stage}/{of}"));
                stages.insert(*stage, (bar, 0));
            }
            JobEvent::TaskSucceeded { stage, metrics, .. } => {
                if let Some((bar, bytes)) = stages.get_mut(stage) {
                    *bytes += metrics.bytes_in;
                    bar.inc(1);
                    bar.set_message(format!("{} read", indicatif::HumanBytes(*bytes)));
                }
            }
            JobEvent::TaskRetrying {
                stage,
                task,
                attempt,
                failure,
            } => {
                if let Some((bar, _)) = stages.get(stage) {
                    bar.println(format!(
                        "stage {stage} task {task}: attempt {attempt} failed, retrying: {}",
                        failure.message
                    ));
                }
            }
            JobEvent::BackupStarted {
                stage,
                task,
                attempt,
            } => {
                if let Some((bar, _)) = stages.get(stage) {
                    bar.println(format!(
                        "stage {stage} task {task}: straggling, backup started (attempt {attempt})"
                    ));
                }
            }
            JobEvent::StageFinished { stage } => {
                if let Some((bar, _)) = stages.get(stage) {
                    bar.finish();
                }
            }
            JobEvent::ExchangeChosen {
                stage,
                choice,
                combine_stage: Some(step),
            } => {
                let _ = self.multi.println(format!(
                    "stage {stage} reads stage {} two-level: {} files combined into {} by stage {step}",
                    choice.input, choice.producers, choice.combiners
                ));
            }
            // Where a stage runs, where there was a choice (--backend auto).
            JobEvent::StagePlaced { stage, placement } if placement.local.is_some() => {
                if let Some((bar, _)) = stages.get(stage) {
                    bar.set_prefix(format!("{} {}", bar.prefix(), placement.label()));
                }
            }
            JobEvent::KeyFilterApplied { stage, filter } => {
                let _ = self.multi.println(format!(
                    "stage {stage} keeps only rows the join in stage {} can match, by the keys of stage {}: {}",
                    filter.join_stage, filter.source_stage, filter.description
                ));
            }
            JobEvent::StageFused { stage, into } => {
                let _ = self.multi.println(format!(
                    "stage {stage} runs no tasks of its own: the tasks of stage {into} run its plan"
                ));
            }
            JobEvent::ExchangeChosen { .. }
            | JobEvent::StagePlaced { .. }
            | JobEvent::TaskStarted { .. }
            | JobEvent::TaskFailed { .. }
            | JobEvent::TaskSuperseded { .. }
            | JobEvent::Planned { .. } => {}
        }
    }
}

/// A bar counting files, or None when stderr is not a terminal.
pub fn file_bar(total: u64, prefix: &str) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} files {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(prefix.to_string());
        bar
    })
}
