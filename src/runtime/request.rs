//! The requestor's start arguments: at most one JSON object, `{"network": "…"}`.

use serde_json::Value;

use crate::node::network::{Network, Networks};
use crate::text::printable;

/// Larger arguments are refused before parsing; the real one is a few dozen bytes.
pub const MAX_ARG_BYTES: usize = 4096;

const EXPECTED: &str =
    r#"accepted: no argument, or one JSON object such as {"network": "sepolia"}"#;

/// Picks the network the requestor asked for, or the configured default.
pub fn network_from_start_args(
    args: &[String],
    networks: &Networks,
    default: &Network,
) -> Result<Network, String> {
    let arg = match args {
        [] => return Ok(default.clone()),
        [one] => one,
        more => return Err(format!("start got {} arguments; {EXPECTED}", more.len())),
    };
    if arg.len() > MAX_ARG_BYTES {
        return Err(format!(
            "start argument is {} bytes, over the {MAX_ARG_BYTES}-byte limit; {EXPECTED}",
            arg.len()
        ));
    }
    let value: Value = serde_json::from_str(arg).map_err(|e| {
        format!(
            "start argument \"{}\" is not valid JSON ({e}); {EXPECTED}",
            printable(arg)
        )
    })?;
    let Value::Object(map) = value else {
        return Err(format!(
            "start argument \"{}\" is not a JSON object; {EXPECTED}",
            printable(arg)
        ));
    };
    if let Some(key) = map.keys().find(|k| k.as_str() != "network") {
        return Err(format!(
            "start argument has unknown key \"{}\"; the only key is \"network\"",
            printable(key)
        ));
    }
    match map.get("network") {
        None => Ok(default.clone()),
        Some(Value::String(name)) => networks.resolve(name),
        Some(other) => Err(format!(
            "start argument key \"network\" is {}, not a string; accepted: {}",
            printable(&other.to_string()),
            networks.accepted()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::network::NetworkSpec;

    fn nets() -> (Networks, Network) {
        let nets = Networks::new(
            [
                ("sepolia".to_string(), NetworkSpec::managed(1)),
                ("dev".to_string(), NetworkSpec::managed(5)),
            ]
            .into(),
            30303,
            8555,
        )
        .unwrap();
        let default = nets.resolve("sepolia").unwrap();
        (nets, default)
    }

    fn parse(args: &[&str]) -> Result<String, String> {
        let (nets, default) = nets();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        network_from_start_args(&args, &nets, &default).map(|n| n.name().to_string())
    }

    #[test]
    fn accepts_the_seed_form_and_defaults() {
        assert_eq!(parse(&[r#"{"network": "dev"}"#]), Ok("dev".into()));
        assert_eq!(parse(&[]), Ok("sepolia".into()));
        assert_eq!(parse(&["{}"]), Ok("sepolia".into()));
    }

    #[test]
    fn refuses_everything_else_by_name() {
        let big = format!(r#"{{"network": "{}"}}"#, "x".repeat(10_000_000));
        let cases: &[(&[&str], &str)] = &[
            (&["{"], "is not valid JSON"),
            (&[""], "is not valid JSON"),
            (&["[\"dev\"]"], "is not a JSON object"),
            (&["\"dev\""], "is not a JSON object"),
            (
                &[r#"{"network": 5}"#],
                "key \"network\" is 5, not a string; accepted: dev, sepolia",
            ),
            (&[r#"{"network": null}"#], "not a string"),
            (&[r#"{"network": "goerli"}"#], "retired"),
            (
                &[r#"{"network": "../../x"}"#],
                "network \"../../x\" is not served",
            ),
            (&[r#"{"network": "dev; rm -rf /"}"#], "is not served"),
            (&[r#"{"network": "dev", "x": 1}"#], "unknown key \"x\""),
            (&["{}", "{}"], "start got 2 arguments"),
            (&[big.as_str()], "over the 4096-byte limit"),
        ];
        for (args, expected) in cases {
            let err = parse(args).expect_err(&format!("{args:?}"));
            assert!(err.contains(expected), "{args:?}: {err}");
            assert!(err.len() < 400, "error too long: {} bytes", err.len());
        }
    }
}
