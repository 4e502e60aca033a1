//! Arguments by hand: a command, maybe a target (`sign kommo`), then `--name value` options,
//! each taking a value and given at most once.

/// What is wrong with the command line (exit 2, with the usage).
#[derive(Debug)]
pub struct UsageError(pub String);

/// The options of one command, as given.
#[derive(Debug, Default)]
pub struct Options(Vec<(String, String)>);

/// Parses `--name value` and `--name=value` pairs; only the `allowed` names are accepted.
pub fn parse(args: &[String], allowed: &[&str]) -> Result<Options, UsageError> {
    let mut options = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(option) = arg.strip_prefix("--") else {
            return Err(UsageError(format!("unexpected argument {arg:?}")));
        };
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, value.to_owned()),
            None => (option, rest.next().ok_or_else(|| UsageError(format!("--{option} needs a value")))?.clone()),
        };
        if !allowed.contains(&name) {
            return Err(UsageError(format!("unknown option --{name}")));
        }
        if options.iter().any(|(given, _)| given == name) {
            return Err(UsageError(format!("--{name} is given twice")));
        }
        options.push((name.to_owned(), value));
    }
    Ok(Options(options))
}

/// Splits off the target of `sign` or `send` (one of `targets`).
pub fn target<'a>(args: &'a [String], targets: &[&'static str]) -> Result<(&'static str, &'a [String]), UsageError> {
    let expected = targets.join(", ");
    let (first, rest) =
        args.split_first().ok_or_else(|| UsageError(format!("name what to sign or send: {expected}")))?;
    let target = targets
        .iter()
        .find(|t| **t == first)
        .ok_or_else(|| UsageError(format!("{first:?} is not one of {expected}")))?;
    Ok((target, rest))
}

impl Options {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(given, _)| given == name).map(|(_, value)| value.as_str())
    }

    /// A value that may be left out, but not given empty.
    pub fn non_empty(&self, name: &str) -> Result<Option<&str>, UsageError> {
        match self.get(name).map(str::trim) {
            Some("") => Err(UsageError(format!("--{name} must not be empty"))),
            value => Ok(value),
        }
    }

    pub fn required(&self, name: &str) -> Result<&str, UsageError> {
        self.non_empty(name)?.ok_or_else(|| UsageError(format!("--{name} is required")))
    }

    /// A numeric id (Kommo's account and user ids), if given.
    pub fn numeric(&self, name: &str) -> Result<Option<u64>, UsageError> {
        self.non_empty(name)?
            .map(|text| text.parse::<u64>().map_err(|_| UsageError(format!("--{name} must be a number, not {text:?}"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn reads_both_option_forms_and_refuses_what_it_does_not_know() {
        let options = parse(&strings(&["--account-id", "a", "--title=T x"]), &["account-id", "title"]).unwrap();
        assert_eq!(options.required("account-id").unwrap(), "a");
        assert_eq!(options.non_empty("title").unwrap(), Some("T x"));
        for bad in [&["--other", "x"][..], &["--title"], &["stray"], &["--title", "a", "--title", "b"]] {
            assert!(parse(&strings(bad), &["title"]).is_err(), "{bad:?}");
        }
        let options = parse(&strings(&["--account-id", "12x", "--title", " "]), &["account-id", "title"]).unwrap();
        assert!(options.numeric("account-id").is_err());
        assert!(options.non_empty("title").is_err());
        assert!(options.required("user-id").is_err());
    }

    #[test]
    fn a_target_is_one_of_those_named() {
        let args = strings(&["chat", "--body", "-"]);
        let (chosen, rest) = target(&args, &["kommo", "chat"]).unwrap();
        assert_eq!((chosen, rest.len()), ("chat", 2));
        assert!(target(&strings(&["token"]), &["kommo", "chat"]).is_err());
        assert!(target(&[], &["kommo"]).is_err());
    }
}
