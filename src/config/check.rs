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
