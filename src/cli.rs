//! One invocation of the binary: an operator's own command (`calibrate`, `metrics`,
//! `top`), run outside the SDK's protocol, or one of the ExeUnit's and the provider's
//! (deploy, start, test, …), run through ya-runtime-sdk with logging up first.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use ya_runtime_sdk::env::DefaultEnv;
use ya_runtime_sdk::RuntimeDef;

use crate::runtime::{self, ErigonRuntime};
use crate::{calibrate, logging, operator, text, NAME};

/// Runs one invocation (deploy, start, test, …) as the ExeUnit or the provider calls it.
pub async fn run() -> ExitCode {
    // Files the runtime, its children and the operator's commands create are never
    // world-readable.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    // An operator's command of its own, outside the SDK's protocol and logging.
    let mut argv = std::env::args_os().skip(1);
    match argv.next() {
        Some(a) if a == calibrate::COMMAND => return calibrate::main(argv).await,
        Some(a) if a == operator::metrics::COMMAND => return operator::metrics::main(argv),
        Some(a) if a == operator::top::COMMAND => return operator::top::main(argv),
        _ => {}
    }
    // Logging must be up before the SDK reads the configuration, which may fail.
    let workdir = workdir_arg(std::env::args_os());
    if let Err(e) = logging::init(workdir.as_deref()) {
        eprintln!("{NAME}: {e}");
        return ExitCode::FAILURE;
    }
    // args_os: `args` panics on an argument that is not UTF-8, and so does the SDK,
    // which reads them that way: such an argument is refused by name here.
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| text::printable(&a.to_string_lossy()))
        .collect();
    if let Some(at) = std::env::args_os()
        .skip(1)
        .position(|a| a.to_str().is_none())
    {
        let shown = args.get(at).map_or("", String::as_str);
        let e = format!(
            "argument {} ({shown}) is not UTF-8; accepted: UTF-8 text",
            at.saturating_add(1)
        );
        log::error!("{e}");
        eprintln!("{NAME}: {e}");
        logging::flush(logging::EXIT_FLUSH);
        return ExitCode::FAILURE;
    }
    log::info!(
        "{NAME} {} (pid {}): {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        args.join(" ")
    );
    stop_with_supervisor();
    let env = DefaultEnv::<<ErigonRuntime as RuntimeDef>::Cli>::default();
    let built = ya_runtime_sdk::build(env, |ctx| {
        let runtime = ErigonRuntime::new(ctx);
        async move { Ok(runtime) }
    });
    let result = built.await;
    runtime::stop_after_input_closed().await;
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("{NAME}: {e:#}");
            ExitCode::FAILURE
        }
    };
    logging::flush(logging::EXIT_FLUSH);
    code
}

/// The supervisor (the ExeUnit, a debugger) can vanish without a Shutdown, even while
/// the start still waits for a node, and the runtime would then run on as an orphan
/// holding its network. The kernel sends SIGTERM when the parent goes, which stops the
/// runtime like a Shutdown (see `runtime`). The signal is tied to the thread that
/// spawned the runtime; yagna's ExeUnit and the test supervisors spawn from threads that
/// live as long as they do.
fn stop_with_supervisor() {
    use nix::sys::signal::Signal;
    let parent = nix::unistd::getppid();
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        log::warn!("cannot ask for a signal when the supervisor exits ({e}); a vanished supervisor leaves this runtime running until its input closes");
        return;
    }
    // The parent may have gone between the two calls; then no signal comes.
    if nix::unistd::getppid() != parent {
        let _ = nix::sys::signal::raise(Signal::SIGTERM);
    }
}

/// `-w DIR`, `--workdir DIR` or `--workdir=DIR`, read before the SDK parses the rest.
fn workdir_arg(args: impl IntoIterator<Item = OsString>) -> Option<PathBuf> {
    let mut args = args.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "-w" || text == "--workdir" {
            return args.next().map(PathBuf::from);
        }
        if let Some(dir) = text.strip_prefix("--workdir=") {
            return Some(PathBuf::from(dir));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_workdir_in_every_spelling() {
        let parse = |a: &[&str]| workdir_arg(a.iter().map(OsString::from));
        assert_eq!(
            parse(&["rt", "--workdir", "/w", "deploy"]),
            Some("/w".into())
        );
        assert_eq!(parse(&["rt", "-w", "/w", "start"]), Some("/w".into()));
        assert_eq!(parse(&["rt", "--workdir=/w", "start"]), Some("/w".into()));
        assert_eq!(parse(&["rt", "test"]), None);
    }
}
