//! The labelled training posts (`label,text` CSV as in `../shared/data/chat-moderation`):
//! an RFC 4180 reader (quoted fields, doubled quotes, line breaks inside quotes).

use crate::model::CLASSES;

/// Why the data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The header is not `label,text`.
    #[error("the header must be `label,text`")]
    Header,
    /// A row with an unknown label or not two fields.
    #[error("row {0}: expected a label of hate, offensive or neither and a text")]
    Row(usize),
}

/// `(class index, text)` of every row of `csv`.
pub fn parse(csv: &str) -> Result<Vec<(usize, String)>, DataError> {
    let mut rows = records(csv).into_iter();
    match rows.next() {
        Some(h) if h == ["label", "text"] => {}
        _ => return Err(DataError::Header),
    }
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let [label, text] = row.as_slice() else {
            return Err(DataError::Row(i + 1));
        };
        let class = CLASSES
            .iter()
            .position(|c| c == label)
            .ok_or(DataError::Row(i + 1))?;
        out.push((class, text.clone()));
    }
    Ok(out)
}

/// The records of a CSV text, each a list of fields.
fn records(csv: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = csv.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        out.push(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_with_commas_quotes_and_line_breaks_are_read_whole() {
        let csv = "label,text\nhate,plain\r\noffensive,\"a, \"\"b\"\"\nc\"\nneither,last";
        assert_eq!(
            parse(csv).unwrap(),
            [
                (0, "plain".to_string()),
                (1, "a, \"b\"\nc".to_string()),
                (2, "last".to_string())
            ]
        );
        assert!(matches!(parse("x,y\n"), Err(DataError::Header)));
        assert!(matches!(
            parse("label,text\nnope,x\n"),
            Err(DataError::Row(1))
        ));
    }
}
