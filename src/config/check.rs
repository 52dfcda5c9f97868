//! Checks of single values that every section uses; each error names the key and
//! what is accepted.

use std::path::Path;

use crate::text::printable;

pub(super) fn absolute(key: &str, path: &Path) -> Result<(), String> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "key `{key}`: \"{}\" is a relative path; accepted: an absolute path",
            printable(&path.to_string_lossy())
        ))
    }
}

pub(super) fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    accepted: std::ops::RangeInclusive<T>,
    note: &str,
) -> Result<(), String> {
    if accepted.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "key `{key}` is {value}; accepted: {} to {}{note}",
            accepted.start(),
            accepted.end()
        ))
    }
}

/// A non-empty list of words of letters, digits and `extra` (rpcdaemon's flag
/// lists, the method policy's namespaces and methods).
pub(super) fn words(key: &str, list: Vec<String>, extra: &str) -> Result<Vec<String>, String> {
    let bad = list.iter().find(|w| {
        w.is_empty()
            || !w
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    });
    match bad {
        Some(bad) => Err(format!(
            "key `{key}`: \"{}\" is not accepted; accepted: letters, digits and {extra:?}",
            printable(bad)
        )),
        None if list.is_empty() => Err(format!("key `{key}` is empty")),
        None => Ok(list),
    }
}
