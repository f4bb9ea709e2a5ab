//! Making app- and daemon-supplied text safe to write to a terminal: an app's log line
//! must never run a terminal command — write the clipboard (OSC 52), plant a link (OSC 8),
//! retitle the window, clear the screen or switch to the alternate screen.
//!
//! Two policies over one classification of characters:
//! - [`escape`] (`conan logs`, the failure bundle, on a terminal): every control is
//!   shown — ESC as `^[`, BEL as `^G`, DEL as `^?`, other C0 in caret notation, C1 and the
//!   bidi overrides as `U+0085` —, tabs kept, nothing dropped; the rest of a sequence is
//!   then plain text (`^[]52;c;aGk=^G`), so the reader sees what the app sent;
//! - [`sanitize`] (`conan monit`'s cells, where width matters): whole escape sequences are
//!   dropped (colours are not worth `^[[32m`), other controls shown as by [`escape`], tabs
//!   expanded.
//!
//! Text is escaped only on its way to a terminal: `--json`, files and pipes get it as the
//! app wrote it, and `conan logs --raw` writes it raw to a terminal too.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is (tab aside).
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || is_bidi(c)
}

/// The Unicode bidi overrides, embeddings, isolates and marks (they reorder what follows
/// on screen).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// How an unsafe character is shown.
fn shown(c: char) -> String {
    let code = u32::from(c);
    match code {
        0..=0x1f => format!("^{}", char::from_u32(code + 0x40).unwrap_or('?')),
        0x7f => "^?".to_owned(),
        _ => format!("U+{code:04X}"),
    }
}

/// `text` with every control but the tab made visible (see the module docs); borrowed
/// when there is none.
#[must_use]
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            out.push_str(&shown(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` escaped when `on_terminal` (see [`escape`]), else as it is.
#[must_use]
pub fn for_output(text: &str, on_terminal: bool) -> Cow<'_, str> {
    if on_terminal {
        escape(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` with every terminal control removed or made visible, so that an app's output can
/// never move the cursor, change colours, retitle the window or switch screens.
///
/// - escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL|ST`, DCS/SOS/PM/APC
///   `… ST`, and two-byte `ESC x`) are dropped: apps colour their logs, and the colours
///   alone are not worth showing as `^[[32m`;
/// - a tab becomes spaces up to the next multiple of 4;
/// - any other C0 or C1 control, DEL, and the Unicode bidi overrides and isolates
///   (which reorder what follows on screen) are shown in caret notation (`^A`, `^?`) or
///   as `U+202E`.
#[must_use]
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut column = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            // A C1 CSI or OSC on its own starts a sequence too.
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\t' => {
                let pad = 4 - column % 4;
                out.extend(std::iter::repeat_n(' ', pad));
                column += pad;
            }
            c if is_unsafe(c) => {
                let shown = shown(c);
                column += shown.chars().count();
                out.push_str(&shown);
            }
            c => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After an ESC: drops the sequence it starts.
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']' | 'P' | 'X' | '^' | '_') => skip_string(chars),
        // `ESC (` and friends take one more byte (a character set designation).
        Some('(' | ')' | '*' | '+' | '-' | '.' | '/' | '#' | '%' | ' ') => {
            chars.next();
        }
        // Any other two-byte sequence (`ESC c`, `ESC 7`, ...), or a lone ESC at the end.
        _ => {}
    }
}

/// A CSI's parameters and intermediates, up to and including its final byte (`@`..`~`).
fn skip_csi(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
        if !('\u{20}'..='\u{3f}').contains(&c) {
            // Not a CSI byte: a malformed sequence ends here (the byte is dropped too).
            return;
        }
    }
}

/// A string sequence (OSC, DCS, ...) up to BEL, `ESC \` or C1 ST.
fn skip_string(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_is_shown_and_nothing_is_dropped() {
        let osc52 = "copy \u{1b}]52;c;aGVsbG8=\u{7} done";
        assert_eq!(escape(osc52), "copy ^[]52;c;aGVsbG8=^G done");
        assert_eq!(
            escape("\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\"),
            "^[]8;;http://x^[\\link^[]8;;^[\\"
        );
        assert_eq!(escape("\u{1b}[2J\u{1b}[?1049h"), "^[[2J^[[?1049h");
        assert_eq!(
            escape("x\u{9b}31m\u{9d}0;t\u{9c}"),
            "xU+009B31mU+009D0;tU+009C"
        );
        assert_eq!(escape("cr\r del\u{7f} nul\0"), "cr^M del^? nul^@");
        assert_eq!(escape("evil\u{202e}txt"), "evilU+202Etxt");
        assert_eq!(escape("a\tb é ✓"), "a\tb é ✓");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            for_output(osc52, false),
            osc52,
            "files and pipes get it as written"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            if c != '\t' {
                let text = c.to_string();
                let out = escape(&text);
                assert!(!out.chars().any(char::is_control), "{c:?} -> {out:?}");
            }
        }
    }
}
