//! `squall-lambda`: the executor as an AWS Lambda function (provided.al2023).
//!
//! Everything is built once per cold start from the environment: object stores
//! (S3 from the standard AWS variables), the spill directory, the memory cap from
//! the function's configured memory. Each invocation is one task attempt; see
//! `squall_executor::lambda` for the payloads.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use squall_executor::StoreRegistry;
use squall_executor::lambda::{
    FunctionConfig, Invocation, InvocationError, InvocationResponse, LambdaExecutor,
    check_runtime_variables,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SQUALL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = check_runtime_variables(|name| std::env::var(name).ok()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let config = FunctionConfig::from_env()?;
    let executor = LambdaExecutor::new(Arc::new(StoreRegistry::new()), config);
    let executor = &executor;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Invocation>| async move {
            // The error's Lambda `errorType` says whether a retry can help.
            let response: Result<InvocationResponse, InvocationError> =
                executor.handle(event.payload).await;
            response
        },
    ))
    .await
}
