//! `--backend` and the flags that go with it, shared by `squall run` and
//! `squall bench tasks`, and the engine they build.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use squall_engine::Engine;
use squall_engine::backend::lambda::DEFAULT_CONCURRENCY;
use squall_engine::backend::{
    AutoBackend, BurstPolicy, InProcessBackend, LambdaBackend, LambdaConfig, Prefer,
};
use squall_engine::planner::default_parallelism;
use squall_engine::platform::Platform;
use squall_engine::tables::to_url;

use super::error::{CliError, Result};
use squall_executor::{ExecutorContext, StoreRegistry};

/// The memory of the function `infra/` deploys by default (MB): what the
/// placement prices Lambda at until a function reports its own.
const DEFAULT_FUNCTION_MEMORY_MB: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In-process executors (the embedded default).
    Local,
    /// AWS Lambda: each task is one invocation of the squall-lambda function.
    Lambda,
    /// Both: each stage runs in-process or on Lambda, where it is predicted
    /// to finish sooner within the job's cost limit (see --burst-above).
    Auto,
}

/// What `--backend auto` favours when it places a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferArg {
    /// Where the stage is predicted to finish sooner.
    Time,
    /// Where it is predicted to cost less (this machine's share priced at
    /// `local_vcpu_hour`).
    Cost,
}

#[derive(Debug, Clone, Default, Args)]
pub struct BackendArgs {
    /// Where tasks run [default: local].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// In-process executors running at once (--backend local; default: the number of cores).
    #[arg(long)]
    pub executors: Option<usize>,
    /// In-process executors beside Lambda (--backend auto; default: the number of cores).
    #[arg(long, value_name = "N")]
    pub local_executors: Option<usize>,
    /// Stages reading at least SIZE (column bytes scanned plus shuffle bytes)
    /// run on Lambda, the others in-process (--backend auto; default: each
    /// stage where it is predicted to finish sooner).
    #[arg(long, value_name = "SIZE", value_parser = super::units::parse_size)]
    pub burst_above: Option<u64>,
    /// What --backend auto favours where it predicts [default: time].
    #[arg(long, value_enum)]
    pub prefer: Option<PreferArg>,
    /// The executor function's name or ARN (--backend lambda).
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Identical functions to spread invocations over: NAME, NAME-2 … NAME-N,
    /// as the stack's FunctionCount deploys them (each gains at most 1,000
    /// new environments per 10 s) [default: 1].
    #[arg(long, value_name = "N", requires = "function")]
    pub function_count: Option<usize>,
    /// Published version or alias of the function (default: $LATEST).
    #[arg(long, value_name = "Q", requires = "function")]
    pub qualifier: Option<String>,
    /// Attempts with a memory pool of at least SIZE invoke QUALIFIER (a version
    /// or alias with more memory), e.g. 4GiB=big (repeatable; --backend lambda).
    #[arg(long, value_name = "SIZE=QUALIFIER", requires = "function")]
    pub memory_qualifier: Vec<String>,
    /// Lambda API endpoint, e.g. LocalStack's or `cargo lambda watch`'s (default: AWS's).
    #[arg(long, value_name = "URL", requires = "function")]
    pub lambda_endpoint: Option<String>,
    /// Invocations in flight at once (--backend lambda; default: 100).
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Tasks of one stage running at once (default: no limit beyond the job's).
    #[arg(long)]
    pub max_stage_concurrency: Option<usize>,
    /// Seconds one invocation may take before its attempt counts as failed [default: 900].
    #[arg(long, value_name = "SECONDS")]
    pub invocation_timeout: Option<u64>,
    /// Where shuffle files and other temporary objects go (default: a folder in the
    /// OS temp directory; with --backend lambda, required and in S3).
    #[arg(long, value_name = "URL")]
    pub work_dir: Option<String>,
}

impl BackendArgs {
    pub fn kind(&self) -> BackendKind {
        self.backend.unwrap_or(BackendKind::Local)
    }

    /// Tasks that run at once, which is also the default shuffle width.
    pub fn parallelism(&self) -> usize {
        match self.kind() {
            BackendKind::Local => self.executors.unwrap_or_else(default_parallelism),
            BackendKind::Lambda => self.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            // Shuffles as wide as the local executors: small jobs stay
            // here, and the planner widens large ones by their bytes.
            BackendKind::Auto => self.local_parallelism(),
        }
    }

    pub async fn engine(&self) -> Result<Engine> {
        self.engine_within(None).await
    }

    /// [`engine`](Self::engine), the in-process executors' memory pools
    /// together at most `memory_budget` bytes when one is given.
    pub async fn engine_within(&self, memory_budget: Option<u64>) -> Result<Engine> {
        let work_root = match &self.work_dir {
            Some(dir) => Some(to_url(dir)?.as_str().trim_end_matches('/').to_string()),
            None => None,
        };
        if self.kind() != BackendKind::Auto
            && let Some(flag) = self.auto_only_flag()
        {
            return Err(CliError::InvalidArgument(format!(
                "{flag} applies to --backend auto only"
            )));
        }
        match self.kind() {
            BackendKind::Local => {
                if let Some(flag) = self.lambda_only_flag() {
                    return Err(CliError::InvalidArgument(format!(
                        "{flag} applies to --backend lambda only"
                    )));
                }
                let engine = match memory_budget {
                    None => Engine::embedded(Some(self.parallelism()))?,
                    Some(bytes) => Engine::embedded_within(self.parallelism(), bytes)?,
                };
                Ok(match work_root {
                    Some(work_root) => Engine {
                        work_root,
                        ..engine
                    },
                    None => engine,
                })
            }
            BackendKind::Lambda => {
                if self.executors.is_some() {
                    return Err(CliError::InvalidArgument(
                        "--executors applies to --backend local; use --max-concurrency".into(),
                    ));
                }
                let (stores, backend, work_root) = self.lambda(work_root).await?;
                Ok(Engine::with_backend(stores, Arc::new(backend), &work_root))
            }
            BackendKind::Auto => {
                if self.executors.is_some() {
                    return Err(CliError::InvalidArgument(
                        "--executors applies to --backend local; use --local-executors".into(),
                    ));
                }
                let (stores, lambda, work_root) = self.lambda(work_root).await?;
                let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
                let mut local = InProcessBackend::new(ctx, self.local_parallelism())?;
                if let Some(bytes) = memory_budget {
                    local = local.with_memory_budget(bytes)?;
                }
                let backend = AutoBackend::new(local, Arc::new(lambda), self.burst_policy());
                // A function served on this machine shares its cores.
                let backend = match &self.lambda_endpoint {
                    Some(_) => backend.with_lambda_slots(default_parallelism()),
                    None => backend,
                };
                let local_root =
                    to_url(&std::env::temp_dir().join("squall-work").to_string_lossy())?;
                Ok(Engine {
                    // A job that stays wholly here keeps its files on disk.
                    local_work_root: Some(local_root.as_str().trim_end_matches('/').to_string()),
                    ..Engine::with_backend(stores, Arc::new(backend), &work_root)
                })
            }
        }
    }

    fn local_parallelism(&self) -> usize {
        self.local_executors.unwrap_or_else(default_parallelism)
    }

    /// How `--backend auto` places stages: against AWS Lambda, or against a
    /// function this machine serves (`--lambda-endpoint`: an emulator, as
    /// fast as the in-process executors and no faster).
    fn burst_policy(&self) -> BurstPolicy {
        let mut policy = BurstPolicy::new(DEFAULT_FUNCTION_MEMORY_MB);
        if self.lambda_endpoint.is_some() {
            policy.lambda = Platform {
                memory_mb: Some(DEFAULT_FUNCTION_MEMORY_MB),
                ..Platform::emulated_lambda()
            };
        }
        policy.burst_above = self.burst_above;
        policy.prefer = match self.prefer {
            Some(PreferArg::Cost) => Prefer::Cost,
            Some(PreferArg::Time) | None => Prefer::Time,
        };
        policy
    }

    /// The Lambda backend of `--backend lambda` or `auto`, with the stores
    /// it and the control plane share, and the work folder (in S3).
    async fn lambda(
        &self,
        work_root: Option<String>,
    ) -> Result<(Arc<StoreRegistry>, LambdaBackend, String)> {
        let kind = match self.kind() {
            BackendKind::Auto => "auto",
            _ => "lambda",
        };
        let function = self.function.clone().ok_or_else(|| {
            CliError::InvalidArgument(format!(
                "--backend {kind} needs --function NAME (the squall-lambda function)"
            ))
        })?;
        let work_root = work_root
            .filter(|root| root.starts_with("s3://") || root.starts_with("s3a://"))
            .ok_or_else(|| {
                CliError::InvalidArgument(format!(
                    "--backend {kind} needs --work-dir s3://bucket/prefix for shuffle files \
                     (Lambda's tasks read and write them)"
                ))
            })?;
        let config = LambdaConfig {
            qualifier: self.qualifier.clone(),
            memory_qualifiers: self.memory_qualifiers()?,
            endpoint: self.lambda_endpoint.clone(),
            max_concurrency: self.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            invocation_timeout: Duration::from_secs(self.invocation_timeout.unwrap_or(900)),
            function_count: self.function_count.unwrap_or(1),
            ..LambdaConfig::new(function)
        };
        let stores = Arc::new(StoreRegistry::new());
        let backend = LambdaBackend::connect(config, stores.clone(), &work_root).await?;
        Ok((stores, backend, work_root))
    }

    /// An auto flag given with another backend.
    fn auto_only_flag(&self) -> Option<&'static str> {
        if self.local_executors.is_some() {
            Some("--local-executors")
        } else if self.burst_above.is_some() {
            Some("--burst-above")
        } else if self.prefer.is_some() {
            Some("--prefer")
        } else {
            None
        }
    }

    /// `--memory-qualifier SIZE=QUALIFIER` flags as (bytes, qualifier).
    fn memory_qualifiers(&self) -> Result<Vec<(u64, String)>> {
        self.memory_qualifier
            .iter()
            .map(|flag| {
                let bad = |why: String| {
                    CliError::InvalidArgument(format!("--memory-qualifier '{flag}': {why}"))
                };
                let (size, qualifier) = flag
                    .split_once('=')
                    .ok_or_else(|| bad("expected SIZE=QUALIFIER, e.g. 4GiB=big".into()))?;
                let bytes = super::units::parse_size(size).map_err(bad)?;
                Ok((bytes, qualifier.trim().to_string()))
            })
            .collect()
    }

    /// A Lambda flag given with the local backend.
    fn lambda_only_flag(&self) -> Option<&'static str> {
        if self.function.is_some() {
            Some("--function")
        } else if self.function_count.is_some() {
            Some("--function-count")
        } else if self.qualifier.is_some() {
            Some("--qualifier")
        } else if !self.memory_qualifier.is_empty() {
            Some("--memory-qualifier")
        } else if self.lambda_endpoint.is_some() {
            Some("--lambda-endpoint")
        } else if self.max_concurrency.is_some() {
            Some("--max-concurrency")
        } else if self.invocation_timeout.is_some() {
            Some("--invocation-timeout")
        } else {
            None
        }
    }
}
