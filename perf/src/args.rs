//! A small command-line parser: `--name value`, `--name=value` and boolean
//! switches, checked against the names a subcommand accepts. Enough for a
//! measurement tool; no extra dependency.

use std::str::FromStr;

/// Flags given to one subcommand.
pub struct Flags {
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Flags {
    /// Parses `args`; `valued` names take a value, `switches` do not.
    /// Unknown names, missing values and stray words are errors.
    pub fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Flags, String> {
        let mut flags = Flags {
            values: Vec::new(),
            switches: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            if !name.starts_with("--") {
                return Err(format!("unexpected argument {arg:?}"));
            }
            if switches.contains(&name) {
                if inline.is_some() {
                    return Err(format!("{name} takes no value"));
                }
                flags.switches.push(name.to_string());
            } else if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or(format!("{name} needs a value"))?.clone(),
                };
                flags.values.retain(|(n, _)| n != name);
                flags.values.push((name.to_string(), value));
            } else {
                return Err(format!("unknown flag {name}"));
            }
        }
        Ok(flags)
    }

    /// Whether the switch `name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// The raw value of `name`, if given.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The parsed value of `name`, if given.
    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.raw(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("bad value for {name}: {v:?}"))
            })
            .transpose()
    }

    /// The parsed value of `name`, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.opt(name)?.unwrap_or(default))
    }
}

/// Test helper: owned arguments from string literals.
#[cfg(test)]
pub(crate) fn test_args(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_values_switches_and_rejects_unknowns() {
        let f = Flags::parse(
            &s(&["--total", "5", "--json", "--conns=3"]),
            &["--total", "--conns", "--clients"],
            &["--json"],
        )
        .unwrap();
        assert_eq!(f.get("--total", 1u64).unwrap(), 5);
        assert_eq!(f.get("--conns", 1usize).unwrap(), 3);
        assert_eq!(f.get("--clients", 7usize).unwrap(), 7);
        assert!(f.switch("--json"));
        assert!(Flags::parse(&s(&["--nope", "1"]), &["--total"], &[]).is_err());
        assert!(Flags::parse(&s(&["--total"]), &["--total"], &[]).is_err());
        assert!(Flags::parse(&s(&["stray"]), &["--total"], &[]).is_err());
        assert!(Flags::parse(&s(&["--total", "x"]), &["--total"], &[])
            .unwrap()
            .get("--total", 1u64)
            .is_err());
    }
}
