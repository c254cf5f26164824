//! Avatars before any is uploaded: Rocket.Chat's initials picture, an SVG of the name's
//! first letters on a colour taken from the name, served at `/avatar/<username>` and
//! `/avatar/room/<rid>`. It needs no lookup (any name gets its picture, as on Rocket.Chat),
//! so it tells a stranger nothing about who exists.

/// Longest name drawn from.
const MAX_NAME: usize = 256;

/// The colours a name's background is picked from (Rocket.Chat's palette of 19).
const COLOURS: &[&str] = &[
    "#F44336", "#E91E63", "#9C27B0", "#673AB7", "#3F51B5", "#2196F3", "#03A9F4", "#00BCD4",
    "#009688", "#4CAF50", "#8BC34A", "#CDDC39", "#FFC107", "#FF9800", "#FF5722", "#795548",
    "#9E9E9E", "#607D8B", "#2F343D",
];

/// Up to two letters: the first of each of the name's first two parts.
pub fn initials(name: &str) -> String {
    let parts: Vec<&str> = name
        .split(['.', '_', '-', ' '])
        .filter(|p| p.chars().next().is_some_and(char::is_alphanumeric))
        .collect();
    let letters: String = match parts.as_slice() {
        [] => name
            .chars()
            .filter(|c| c.is_alphanumeric())
            .take(1)
            .collect(),
        [one] => one.chars().take(1).collect(),
        [first, second, ..] => first
            .chars()
            .take(1)
            .chain(second.chars().take(1))
            .collect(),
    };
    if letters.is_empty() {
        "?".to_owned()
    } else {
        letters.to_uppercase()
    }
}

fn escaped(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The SVG for `name` (a path segment, already percent-decoded).
pub fn initials_svg(name: &str) -> String {
    let name: String = name.chars().take(MAX_NAME).collect();
    let sum: usize = name.bytes().map(usize::from).sum();
    let colour = COLOURS[sum % COLOURS.len()];
    let letters = escaped(&initials(&name));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 200 200\" width=\"200\" height=\"200\">\
<rect width=\"100%\" height=\"100%\" fill=\"{colour}\"/>\
<text x=\"50%\" y=\"50%\" dy=\"0.35em\" text-anchor=\"middle\" fill=\"#ffffff\" \
font-family=\"Helvetica, Arial, sans-serif\" font-size=\"100\">{letters}</text></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_take_the_first_letters_of_two_parts() {
        assert_eq!(initials("john.doe"), "JD");
        assert_eq!(initials("alice"), "A");
        assert_eq!(initials("__"), "?");
        assert_eq!(initials("émile_zola"), "ÉZ");
    }

    #[test]
    fn markup_in_a_name_is_text_not_markup() {
        let svg = initials_svg("<script>");
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("fill=\"#"));
        assert_eq!(initials_svg("same"), initials_svg("same"));
    }
}
