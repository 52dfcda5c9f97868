//! Untrusted text made safe to echo: in an error a requestor reads, in a log line, or
//! as a file name.

/// Shortens and escapes untrusted input before it is echoed in an error or a log line.
pub fn printable(input: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = input
        .chars()
        .take(MAX)
        .flat_map(char::escape_default)
        .collect();
    if input.chars().count() > MAX {
        out.push_str(&format!("… ({} bytes)", input.len()));
    }
    out
}

/// The activity id comes from the work folder's name, which the provider chose but a
/// log line or a lock record should not trust: letters, digits, `-`, `_` and `.`, at
/// most 64 of them, or `local` when nothing is left.
pub fn activity_id(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "local".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\"b\n"), "a\\\"b\\n");
        let long = "x".repeat(10_000);
        let shown = printable(&long);
        assert!(
            shown.len() < 100 && shown.contains("10000 bytes"),
            "{shown}"
        );
    }

    #[test]
    fn activity_ids_keep_only_safe_characters() {
        assert_eq!(activity_id("a1/../b;c"), "a1..bc");
        assert_eq!(activity_id("///"), "local");
        assert_eq!(activity_id(&"x".repeat(100)).len(), 64);
    }
}
