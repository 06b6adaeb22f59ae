//! The one table renderer of the crate: aligned columns for people, with an
//! optional terminal colour per cell and note lines under a row. `status`
//! colours its tables; `incidents` and `incident show` print them plain.

use serde::Serialize;
use serde_json::Value;

/// A terminal colour for one cell (SGR code), or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

impl Tone {
    fn sgr(self) -> Option<&'static str> {
        match self {
            Tone::Plain => None,
            Tone::Good => Some("32"),
            Tone::Warn => Some("33"),
            Tone::Bad => Some("1;31"),
        }
    }
}

/// `text` in `tone`, with the escape codes only when `colour` is on.
pub(crate) fn paint(text: &str, tone: Tone, colour: bool) -> String {
    match tone.sgr() {
        Some(code) if colour => format!("\x1b[{code}m{text}\x1b[0m"),
        _ => text.to_owned(),
    }
}

/// The name serde gives a unit enum variant (`evacuating`, `done`), as a
/// cell.
pub(crate) fn name_of(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

/// An optional value as a cell: `-` when there is none.
pub(crate) fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// A table whose columns are as wide as their widest cell (two spaces
/// between columns, each line indented by two); widths count characters,
/// never escape codes.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<(String, Tone)>>,
    /// Lines printed under a row (last error, invalid values).
    notes: Vec<Vec<(String, Tone)>>,
}

impl Table {
    /// An empty table with these column names.
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row of toned cells, and the note lines printed under it.
    pub(crate) fn row(&mut self, cells: Vec<(String, Tone)>, notes: Vec<(String, Tone)>) {
        self.rows.push(cells);
        self.notes.push(notes);
    }

    /// Adds a row of plain cells without notes.
    pub(crate) fn plain_row(&mut self, cells: Vec<String>) {
        self.row(
            cells.into_iter().map(|c| (c, Tone::Plain)).collect(),
            Vec::new(),
        );
    }

    /// Appends the header, then every row with its notes, to `out`.
    pub(crate) fn render(&self, out: &mut String, colour: bool) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, (cell, _)) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<(String, Tone)>, out: &mut String| {
            let last = cells.len().saturating_sub(1);
            out.push_str("  ");
            for (i, ((cell, tone), w)) in cells.into_iter().zip(&widths).enumerate() {
                out.push_str(&paint(&cell, tone, colour));
                if i < last {
                    let pad = w.saturating_sub(cell.chars().count()) + 2;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.push('\n');
        };
        let header = self
            .header
            .iter()
            .map(|h| ((*h).to_owned(), Tone::Plain))
            .collect();
        line(header, out);
        for (row, notes) in self.rows.iter().zip(&self.notes) {
            line(row.clone(), out);
            for (note, tone) in notes {
                out.push_str("    ");
                out.push_str(&paint(note, *tone, colour));
                out.push('\n');
            }
        }
    }
}
