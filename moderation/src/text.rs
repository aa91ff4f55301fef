//! Text as the models see it: HTML entities decoded (the training posts carry `&#128553;`
//! for emoji), lower case, user mentions and links folded into one token each, runs of one
//! letter cut to two ("soooo" and "sooo" are the same word), then words.

/// `text` normalised and split into words (letters, digits and `'`; emoji and other
/// symbols are words of their own).
pub fn words(text: &str) -> Vec<String> {
    let text = decode_entities(text);
    let mut out = Vec::new();
    for raw in text.split_whitespace() {
        let lower = raw.to_lowercase();
        if lower.starts_with('@') && lower.len() > 1 {
            out.push("@user".to_string());
            continue;
        }
        if lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("www.")
        {
            out.push("url".to_string());
            continue;
        }
        let mut word = String::new();
        for c in lower.chars() {
            if c.is_alphanumeric() || c == '\'' {
                word.push(c);
            } else {
                flush(&mut word, &mut out);
                if !c.is_ascii_punctuation() && !c.is_whitespace() {
                    out.push(c.to_string());
                }
            }
        }
        flush(&mut word, &mut out);
    }
    out
}

fn flush(word: &mut String, out: &mut Vec<String>) {
    let w = word.trim_matches('\'');
    if !w.is_empty() {
        out.push(squeeze(w));
    }
    word.clear();
}

/// Runs of three or more of one character cut to two.
fn squeeze(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut run = 0;
    let mut last = None;
    for c in word.chars() {
        if Some(c) == last {
            run += 1;
        } else {
            run = 1;
            last = Some(c);
        }
        if run <= 2 {
            out.push(c);
        }
    }
    out
}

/// Decode `&#NNN;`, `&#xHH;` and the common named entities; anything else stays as written.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // An entity is short: its `;` within the next 12 characters.
        let end = rest
            .char_indices()
            .take(12)
            .find(|(_, c)| *c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|end| entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_links_entities_and_stretched_words_are_normalised() {
        assert_eq!(
            words("RT @Someone: Sooooo GOOD!!! &#128553; see https://x.y/z &amp; more"),
            ["rt", "@user", "soo", "good", "😩", "see", "url", "more"]
        );
        assert_eq!(words("don't 'quote'"), ["don't", "quote"]);
        assert_eq!(
            decode_entities("a &bogus; b &#xZZ; &"),
            "a &bogus; b &#xZZ; &"
        );
        // Any text is safe, however its characters fall.
        assert_eq!(decode_entities("&ééééééé;x&"), "&ééééééé;x&");
        assert_eq!(decode_entities("&#1114112;"), "&#1114112;");
        assert!(words("").is_empty());
    }
}
