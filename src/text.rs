//! Unicode text rules every capability shares: the folded key that search and title sorting
//! compare, and which characters show nothing.
//!
//! The databases never fold text themselves: SQLite's `lower()` folds ASCII only and
//! PostgreSQL's depends on the database's collation. The service computes [`fold`] once,
//! stores the result beside the text, and folds a search term with the same function, so
//! both databases compare the same bytes.

use caseless::Caseless;
use icu_properties::{
    CodePointMapData, CodePointSetData,
    props::{DefaultIgnorableCodePoint, GeneralCategory, PrependedConcatenationMark},
};
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

/// The key under which `text` is searched and sorted: Unicode compatibility caseless
/// matching (The Unicode Standard, §3.13, D146: `NFKD(toCasefold(NFKD(toCasefold(NFD(X)))))`,
/// with the default, non-Turkic full case folding of `CaseFolding.txt`), without
/// default-ignorable code points, composed to NFC.
///
/// Two texts have the same key when they differ only in case (`CAFÉ`, `café`; `Σ`, `σ`, `ς`;
/// `ß`, `SS`), in canonical form (NFC or NFD), in compatibility form (`ﬁ`, `fi`; `Ａ`, `a`)
/// or in invisible characters (a zero-width space). Accents still count: `cafe` is not
/// `café`. `İ` folds to `i` followed by U+0307 COMBINING DOT ABOVE, as the default folding
/// says, so it is not the `i` of `I`; the dotless `ı` stays apart from `i`. Keys compare in
/// byte order (code-point order), the same on both databases.
///
/// The function is idempotent (`fold(fold(x)) == fold(x)`), so a folded key can be folded
/// again harmlessly. Changing it (a new Unicode version, another rule) changes stored keys:
/// ship that with a migration that clears them, and the start-up back-fill recomputes them.
pub fn fold(text: &str) -> String {
    text.chars()
        .nfd()
        .default_case_fold()
        .nfkd()
        .default_case_fold()
        .nfkd()
        .filter(|&c| !is_default_ignorable(c))
        .nfc()
        .collect()
}

/// Whether `c` shows nothing on its own: white space (`White_Space`, which includes the
/// no-break and ideographic spaces), control characters (`Cc`), default-ignorable code
/// points (zero-width space and joiners, word joiner, BOM, soft hyphen, variation selectors,
/// Hangul fillers, tags …), format characters (`Cf`) other than the prepended concatenation
/// marks that Arabic and others draw, and U+2800 BRAILLE PATTERN BLANK, a symbol whose glyph
/// is by definition empty.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || c == '\u{2800}'
        || is_default_ignorable(c)
        || (CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
            && !CodePointSetData::new::<PrependedConcatenationMark>().contains(c))
}

fn is_default_ignorable(c: char) -> bool {
    CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

/// `text` without the leading and trailing grapheme clusters that show nothing (every
/// character [`is_invisible`]). Whole clusters, so that the variation selector of `❤️` or
/// the tags of a flag stay with what they modify; empty when nothing in `text` shows.
pub fn trim_invisible(text: &str) -> &str {
    let mut visible = text
        .grapheme_indices(true)
        .filter(|(_, cluster)| !cluster.chars().all(is_invisible));
    let Some((start, first)) = visible.next() else {
        return "";
    };
    let end = visible
        .next_back()
        .map_or(start + first.len(), |(at, cluster)| at + cluster.len());
    &text[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_ignores_case_and_form_in_every_script() {
        for (a, b) in [
            ("CAFÉ order", "café ORDER"),
            ("cafe\u{301}", "CAFÉ"),
            ("Москва", "МОСКВА"),
            ("ΟΔΥΣΣΕΥΣ", "οδυσσευς"),
            ("Straße", "STRASSE"),
            ("STRAẞE", "strasse"),
            ("ﬁle", "FILE"),
            ("ＡＢＣ", "abc"),
            ("a\u{200b}b", "AB"),
            ("İstanbul", "i\u{307}stanbul"),
        ] {
            assert_eq!(fold(a), fold(b), "{a} ~ {b}");
        }
        for (a, b) in [("cafe", "café"), ("İstanbul", "istanbul"), ("ı", "i")] {
            assert_ne!(fold(a), fold(b), "{a} !~ {b}");
        }
        assert_eq!(fold("CAFÉ"), "café");
        assert_eq!(fold("ΟΔΟΣ"), "οδοσ");
    }

    #[test]
    fn characters_that_show_nothing_are_invisible() {
        for c in [
            ' ',
            '\t',
            '\n',
            '\u{a0}',
            '\u{3000}',
            '\u{2028}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}',
            '\u{fe0f}',
            '\u{3164}',
            '\u{115f}',
            '\u{180e}',
            '\u{e0001}',
            '\u{1}',
            '\u{7f}',
            '\u{2800}',
            '\u{202e}',
            '\u{34f}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', 'é', '\u{301}', '.', '\u{600}', 'Ж', '😀', '\u{3042}'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn trimming_keeps_what_modifies_a_visible_character() {
        assert_eq!(trim_invisible("\u{200b} milk\u{feff}\u{3000}"), "milk");
        assert_eq!(trim_invisible("I ❤\u{fe0f}"), "I ❤\u{fe0f}");
        assert_eq!(trim_invisible("\u{200b}\u{2060}\u{fe0f} \u{3164}"), "");
        assert_eq!(trim_invisible("a\u{200b}b"), "a\u{200b}b");
    }
}
