//! Children are spawned from this thread, which lives as long as the process: their
//! PR_SET_PDEATHSIG fires when the spawning thread exits (see `node::child`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    ya_runtime_erigon::cli::run().await
}
