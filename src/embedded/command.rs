//! Quick helper commands (`pg_config`, `id`) whose trimmed output answers a question.

use std::process::Stdio;

/// Trimmed stdout of a quick helper command, or `None` if it is missing or fails.
pub(super) fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}
