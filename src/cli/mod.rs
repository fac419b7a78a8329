//! Rendering for the command line: tables and JSON for `genq keys` and `genq jobs`.

pub mod keys;

/// Left-aligned columns separated by two spaces; the first row is the header.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let rows = vec![
            vec!["A".into(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ];
        assert_eq!(super::columns(&rows), "A    BB\nccc  d\n");
    }
}
