//! Aligned tables: widths are measured on the plain text, colour is applied after padding.

use super::Style;

/// A table: a header and rows of cells, each cell optionally coloured by a function.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

/// One cell: its text and an optional colouring.
#[derive(Debug)]
pub struct Cell {
    text: String,
    status: bool,
}

impl Cell {
    /// A plain cell.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            status: false,
        }
    }

    /// A cell holding a status name, coloured by [`Style::status`].
    #[must_use]
    pub fn status(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            status: true,
        }
    }
}

impl Table {
    /// A table with these column names.
    #[must_use]
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns separated by two spaces.
    #[must_use]
    pub fn render(&self, style: Style) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| pad(h, widths[i], i + 1 == columns))
            .collect();
        out.push_str(&style.paint(super::Color::Bold, header.join("  ").trim_end()));
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .take(columns)
                .map(|(i, cell)| {
                    let padded = pad(&cell.text, widths[i], i + 1 == columns);
                    if cell.status {
                        let rest = &padded[cell.text.len()..];
                        format!("{}{rest}", style.status(&cell.text))
                    } else {
                        padded
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

fn pad(text: &str, width: usize, last: bool) -> String {
    if last {
        return text.to_owned();
    }
    let n = text.chars().count();
    format!("{text}{}", " ".repeat(width.saturating_sub(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut t = Table::new(&["NAME", "STATUS", "URL"]);
        t.row(vec![
            Cell::new("a"),
            Cell::status("running"),
            Cell::new("http://x"),
        ]);
        t.row(vec![
            Cell::new("longer-name"),
            Cell::status("failed"),
            Cell::new("-"),
        ]);
        assert_eq!(
            t.render(Style::plain()),
            "NAME         STATUS   URL\n\
             a            running  http://x\n\
             longer-name  failed   -\n"
        );
    }
}
