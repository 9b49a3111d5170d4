use std::process::ExitCode;

// mimalloc instead of the system allocator: glibc's malloc took a sixth of the CPU of a
// delivered webhook (see docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    callrelay::cli::run().await
}
