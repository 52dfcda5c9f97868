//! What a RUN may ask for: `STATUS`, as the ExeUnit sends it (`bin: "STATUS"`), or
//! wrapped in a shell as ya-runtime-dbg's default exec mode sends it
//! (`bin: "/bin/bash", args: ["bash", "-c", "STATUS"]`). No shell is ever run: the
//! wrapper is only recognised, and its script must be exactly a known command.

use crate::text::printable;

/// The commands a RUN can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
}

const ACCEPTED: &str = "the only command is STATUS (alone, or as sh -c STATUS)";

/// Shells whose `-c SCRIPT` form is recognised.
const SHELLS: &[&str] = &["sh", "bash"];

/// Reads a RUN's `bin` and `args` (argv, with argv\[0\] first, as the ExeUnit and
/// ya-runtime-dbg send them). The error names what was sent, escaped and shortened.
pub fn parse(bin: &str, args: &[String]) -> Result<Command, String> {
    if bin.trim().is_empty() {
        return Err(format!("empty command; {ACCEPTED}"));
    }
    if let Some(command) = known(bin) {
        return Ok(command);
    }
    let shell = bin.rsplit('/').next().unwrap_or(bin);
    if SHELLS.contains(&shell) {
        if let [_, flag, script] = args {
            if flag == "-c" {
                return known(script.trim()).ok_or_else(|| {
                    format!(
                        "unknown command \"{}\" in {} -c; {ACCEPTED}",
                        printable(script),
                        printable(bin)
                    )
                });
            }
        }
        return Err(format!(
            "unknown command \"{}\" with arguments {}; {ACCEPTED}",
            printable(bin),
            printable(&format!("{args:?}"))
        ));
    }
    Err(format!(
        "unknown command \"{}\"; {ACCEPTED}",
        printable(bin)
    ))
}

fn known(name: &str) -> Option<Command> {
    name.eq_ignore_ascii_case("STATUS")
        .then_some(Command::Status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bin: &str, args: &[&str]) -> Result<Command, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse(bin, &args)
    }

    #[test]
    fn accepts_status_as_the_exeunit_and_the_debugger_send_it() {
        assert_eq!(run("STATUS", &["STATUS"]), Ok(Command::Status));
        assert_eq!(run("status", &["status"]), Ok(Command::Status));
        assert_eq!(
            run("/bin/bash", &["bash", "-c", "STATUS"]),
            Ok(Command::Status)
        );
        assert_eq!(
            run("/bin/sh", &["sh", "-c", "  STATUS\n"]),
            Ok(Command::Status)
        );
        assert_eq!(run("bash", &["bash", "-c", "status"]), Ok(Command::Status));
    }

    #[test]
    fn refuses_everything_else_naming_what_was_sent() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("", &[], "empty command"),
            ("  ", &["x"], "empty command"),
            ("ls", &["ls"], "unknown command \"ls\""),
            (
                "/bin/bash",
                &["bash", "-c", "STATUS; rm -rf /"],
                "\"STATUS; rm -rf /\" in /bin/bash -c",
            ),
            (
                "/bin/bash",
                &["bash", "-c", "STATUS STATUS"],
                "unknown command \"STATUS STATUS\"",
            ),
            (
                "/bin/bash",
                &["bash", "-c", ""],
                "unknown command \"\" in /bin/bash -c",
            ),
            ("/bin/bash", &["bash", "-c"], "\"/bin/bash\" with arguments"),
            ("/bin/bash", &["bash", "-x", "STATUS"], "with arguments"),
            (
                "/bin/bash",
                &["bash", "-c", "STATUS", "extra"],
                "with arguments",
            ),
            (
                "/usr/bin/zsh",
                &["zsh", "-c", "STATUS"],
                "unknown command \"/usr/bin/zsh\"",
            ),
            ("/bin/bash", &["bash", "-c", "$(STATUS)"], "\"$(STATUS)\""),
        ];
        for (bin, args, expected) in cases {
            let err = run(bin, args).expect_err(bin);
            assert!(err.contains(expected), "{bin} {args:?}: {err}");
            assert!(err.contains("the only command is STATUS"), "{err}");
        }
        let long = "x".repeat(100_000);
        assert!(run(&long, &[]).unwrap_err().len() < 300);
    }
}
