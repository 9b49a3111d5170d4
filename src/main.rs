use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    callrelay::cli::run().await
}
