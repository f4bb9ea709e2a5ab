//! `conan logs`.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::SystemTime;

use conan::monitor::logs::TaggedLine;
use conan::{LogLevel, LogLine, Timestamp};
use hyper::Method;

use crate::api::query;
use crate::cli::LogsArgs;
use crate::client::Client;
use crate::error::{CliError, CliResult};
use crate::home::Home;
use crate::output::{self, Color, Style};

/// Lines shown without `-n`: 100, or 10 when following (like `tail -f`).
const DEFAULT_LINES: usize = 100;
const DEFAULT_FOLLOW_LINES: usize = 10;

/// Reads `10m` (that long ago) or an RFC 3339 time.
///
/// # Errors
/// Exit 2 for anything else.
pub fn parse_time(flag: &str, text: &str) -> CliResult<Timestamp> {
    if let Ok(ago) = conan::time::parse_duration(text) {
        // Not before 1970: such a time cannot be written (or meant).
        return SystemTime::now()
            .checked_sub(ago)
            .filter(|t| *t >= SystemTime::UNIX_EPOCH)
            .map(Timestamp::from_system_time)
            .ok_or_else(|| {
                CliError::usage(format!(
                    "--{flag} {text}: that long ago is before 1970; give a shorter duration or an RFC 3339 time"
                ))
            });
    }
    Timestamp::parse_rfc3339(text).map_err(|_| {
        CliError::usage(format!(
            "--{flag} {text}: expected a duration ago (10m, 2h) or an RFC 3339 time (2026-05-01T10:00:00Z)"
        ))
    })
}

/// `conan logs NAME ...`; with several names, `--all` or `--label`, the merged lines of
/// all of them (`GET /v1/logs`), each prefixed with its deployment's name.
pub async fn run(home: &Home, args: &LogsArgs) -> CliResult {
    let mut params = vec![(
        "tail",
        args.lines
            .unwrap_or(if args.follow {
                DEFAULT_FOLLOW_LINES
            } else {
                DEFAULT_LINES
            })
            .to_string(),
    )];
    if let Some(since) = &args.since {
        params.push(("since", parse_time("since", since)?.to_string()));
    }
    if let Some(until) = &args.until {
        params.push(("until", parse_time("until", until)?.to_string()));
    }
    if let Some(level) = &args.level {
        if LogLevel::from_name(level).is_none() {
            return Err(CliError::usage(format!(
                "--level {level}: expected trace, debug, info, warn, error or fatal"
            )));
        }
        params.push(("level", level.clone()));
    }
    if let Some(text) = &args.grep {
        params.push(("grep", text.clone()));
    }
    if args.stdout {
        params.push(("stream", "stdout".to_owned()));
    }
    if args.stderr {
        params.push(("stream", "stderr".to_owned()));
    }
    if args.follow {
        params.push(("follow", "1".to_owned()));
    }
    let client = Client::connect(home).await?;
    let style = Style::stdout();
    // An app's text reaches a terminal escaped (it could otherwise write the clipboard,
    // retitle the window or clear the screen); `--json`, pipes and files get it as written.
    let escape = !args.raw && std::io::stdout().is_terminal();
    if let [name] = args.names.as_slice()
        && !args.all
        && args.label.is_empty()
    {
        let name = query::encode(&[("", name.clone())]);
        let path = format!(
            "/deployments/{}/logs?{}",
            name.trim_start_matches('='),
            query::encode(&params)
        );
        let mut lines = client.stream::<()>(Method::GET, &path, None).await?;
        let mut shown = 0usize;
        while let Some(line) = lines.next::<LogLine>().await {
            let mut line = line?;
            shown += 1;
            if args.json.json {
                print_json(&line)?;
            } else {
                escape_message(&mut line, escape);
                println!("{}", output::log_line(&line, style));
            }
        }
        no_match_note(shown, args);
        return Ok(());
    }
    for name in &args.names {
        params.push(("deployment", name.clone()));
    }
    for label in &args.label {
        if !label.contains('=') {
            return Err(CliError::usage(format!(
                "--label {label}: expected KEY=VALUE"
            )));
        }
        params.push(("label", label.clone()));
    }
    let path = format!("/logs?{}", query::encode(&params));
    let mut lines = client.stream::<()>(Method::GET, &path, None).await?;
    let mut shown = 0usize;
    while let Some(line) = lines.next::<TaggedLine>().await {
        let mut tagged = line?;
        shown += 1;
        if args.json.json {
            print_json(&tagged)?;
        } else {
            escape_message(&mut tagged.line, escape);
            println!(
                "{} {}",
                style.paint(Color::Bold, &format!("{} |", tagged.deployment)),
                output::log_line(&tagged.line, style)
            );
        }
    }
    no_match_note(shown, args);
    Ok(())
}

/// With filters and no line shown, a word on stderr (stdout stays empty for scripts):
/// silence looked like "nothing logged" or a broken filter.
fn no_match_note(shown: usize, args: &LogsArgs) {
    let filtered = args.level.is_some()
        || args.grep.is_some()
        || args.since.is_some()
        || args.until.is_some()
        || args.stdout
        || args.stderr;
    if shown == 0 && !args.follow {
        if filtered {
            eprintln!("no lines matched");
        } else {
            eprintln!("no lines logged yet");
        }
    }
}

/// Makes the line's text safe for a terminal when `escape` (see [`output::escape`]).
fn escape_message(line: &mut LogLine, escape: bool) {
    if escape && let Cow::Owned(safe) = output::escape::escape(&line.message) {
        line.message = safe;
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> CliResult {
    match serde_json::to_string(value) {
        Ok(text) => {
            println!("{text}");
            Ok(())
        }
        Err(e) => Err(CliError::failed(format!("cannot encode a line: {e}"))),
    }
}
