//! Text helpers of `conan monit`: making daemon- and app-supplied text safe to put on a
//! terminal (the escaping of [`crate::output::escape`]), and text sparklines for table cells.

/// The eight heights of a text sparkline (the same glyphs ratatui's `Sparkline` uses).
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub use crate::output::escape::sanitize;

/// A text sparkline of the last `width` values, scaled from 0 to `max(values, floor)`,
/// newest on the right; blank where there is no value yet. `floor` keeps a flat, small
/// series (0.1 % CPU) from looking like a full one.
#[must_use]
pub fn spark(values: &[f64], width: usize, floor: f64) -> String {
    let shown = &values[values.len().saturating_sub(width)..];
    let top = shown.iter().copied().fold(floor, f64::max);
    let mut out = " ".repeat(width - shown.len());
    for v in shown {
        out.push(bar(*v, top));
    }
    out
}

/// `values` mapped onto 0..=1 between their smallest and largest positive value, for a
/// series whose level matters less than its trend (memory: 44.1 MiB against 44.3 MiB is a
/// full bar against a full bar when scaled from 0). The smallest shows as a low bar, not
/// none; a flat series (within 0.1 %) sits at half height; gaps (0) stay at 0.
#[must_use]
pub fn relative(values: &[f64]) -> Vec<f64> {
    let positive = values.iter().copied().filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() || v <= 0.0 {
                0.0
            } else if hi - lo <= hi * 0.001 {
                0.45
            } else {
                0.15 + 0.85 * (v - lo) / (hi - lo)
            }
        })
        .collect()
}

fn bar(value: f64, top: f64) -> char {
    if !value.is_finite() || value <= 0.0 || top <= 0.0 {
        return BARS[0];
    }
    let steps = (BARS.len() - 1) as f64;
    // Rounded to one of eight steps: the cast cannot truncate anything that matters.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = ((value / top).min(1.0) * steps).round() as usize;
    BARS[i.min(BARS.len() - 1)]
}

/// `text` cut to `width` characters, with `…` when it was longer.
#[must_use]
pub fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_dropped_and_controls_made_visible() {
        assert_eq!(sanitize("\u{1b}[32mgreen\u{1b}[0m ok"), "green ok");
        assert_eq!(
            sanitize("a\u{1b}[2J\u{1b}[Hb"),
            "ab",
            "clear screen and home"
        );
        assert_eq!(sanitize("\u{1b}[?1049hx"), "x", "alternate screen switch");
        assert_eq!(
            sanitize("\u{1b}]0;pwned\u{7}title"),
            "title",
            "OSC with BEL"
        );
        assert_eq!(
            sanitize("\u{1b}]8;;http://x\u{1b}\\link"),
            "link",
            "OSC with ST"
        );
        assert_eq!(sanitize("\u{1b}Pq#0\u{1b}\\after"), "after", "DCS (sixel)");
        assert_eq!(sanitize("\u{1b}(Bplain"), "plain");
        assert_eq!(sanitize("x\u{9b}31my"), "xy", "C1 CSI");
        assert_eq!(sanitize("bell\u{7} cr\r del\u{7f}"), "bell^G cr^M del^?");
        assert_eq!(sanitize("nul\0"), "nul^@");
        assert_eq!(sanitize("a\u{85}b"), "aU+0085b", "C1 NEL");
        assert_eq!(
            sanitize("evil\u{202e}txt"),
            "evilU+202Etxt",
            "bidi override"
        );
        assert_eq!(sanitize("a\tb"), "a   b");
        assert_eq!(sanitize("trailing \u{1b}"), "trailing ");
        assert_eq!(sanitize("unicode é ✓ 日本"), "unicode é ✓ 日本");
        for text in [
            "\u{1b}[1;31;4mx",
            "\u{1b}]52;c;Zm9v\u{7}",
            "\u{1b}[",
            "\u{1b}]",
        ] {
            let clean = sanitize(text);
            assert!(
                !clean.chars().any(char::is_control),
                "{text:?} -> {clean:?}"
            );
        }
    }

    #[test]
    fn sparklines_scale_to_the_maximum_and_pad_on_the_left() {
        assert_eq!(spark(&[], 4, 1.0), "    ");
        assert_eq!(spark(&[0.0, 1.0, 2.0, 4.0], 4, 1.0), "▁▃▅█");
        assert_eq!(spark(&[4.0, 4.0], 4, 1.0), "  ██");
        assert_eq!(
            spark(&[0.1, 0.1], 2, 5.0),
            "▁▁",
            "a flat, small series stays low"
        );
        assert_eq!(
            spark(&[9.0, 1.0, 2.0], 2, 0.0),
            "▅█",
            "only the last `width` count"
        );
        assert_eq!(spark(&[f64::NAN, -1.0], 2, 1.0), "▁▁");
    }

    #[test]
    fn relative_series_show_the_trend_not_the_level() {
        let mib = 1024.0 * 1024.0;
        let growing: Vec<f64> = [44.0, 44.1, 44.2, 44.4].iter().map(|m| m * mib).collect();
        assert_eq!(spark(&relative(&growing), 4, 1.0), "▂▄▅█");
        assert_eq!(
            spark(&relative(&[44.0 * mib, 44.0 * mib]), 2, 1.0),
            "▄▄",
            "flat sits at half height"
        );
        assert_eq!(
            spark(&relative(&[0.0, 10.0, 20.0]), 3, 1.0),
            "▁▂█",
            "a gap is the lowest bar"
        );
        assert!(relative(&[]).is_empty());
    }

    #[test]
    fn clip_marks_cut_text() {
        assert_eq!(clip("hello", 5), "hello");
        assert_eq!(clip("hello world", 6), "hello…");
    }
}
