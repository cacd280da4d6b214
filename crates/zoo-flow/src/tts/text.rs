//! The text front end: English normalisation, the symbol sets and text -> symbol ids.
//!
//! [`normalize`] turns written English into what is said, in lower-case characters:
//! cardinals (with commas, decimals, a leading minus), ordinals ("21st" -> "twenty-first"),
//! years ("1999" -> "nineteen ninety-nine"), times ("10:05 pm" -> "ten oh five p m"),
//! currency ("$5.50" -> "five dollars, fifty cents"), percentages, common abbreviations
//! ("Dr." -> "doctor") and a few symbols ("&" -> "and"). Punctuation that marks a pause
//! (`, . ! ? ; : -`) is kept; brackets and dashes become commas, quotes go. The rules are in the
//! spirit of keithito/tacotron's `cleaners.py` (used by Glow-TTS), written anew for this crate.
//!
//! [`Symbols`] is either the characters (letters, apostrophe, space, the pause punctuation) or
//! IPA phonemes from espeak-ng ([`super::espeak`]), with the same punctuation. [`text_to_ids`]
//! does normalisation, the optional phonemisation and the lookup; symbols outside the set are
//! dropped and reported in [`Encoded::dropped`] (the caller decides how to warn).
use serde::{Deserialize, Serialize};

use super::espeak;
use crate::{Error, Result};

/// Id 0: padding (and the blank that [`intersperse`] puts between symbols).
pub const PAD: char = '_';
/// Punctuation kept as pause symbols, in both symbol sets.
pub const PUNCTUATION: &str = "!',-.:;? ";
/// IPA symbols espeak-ng may print, beyond the ASCII letters: vowels, consonants,
/// suprasegmentals (stress, length) and the r-coloured schwa; taken from the IPA chart.
const IPA: &str =
    "æçðøħŋœǀǁǂǃɐɑɒɓɔɕɖɗɘəɚɛɜɝɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʤʧʰʲˈˌːˑ˞ᵻⱱθβχ";

/// Which symbols a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Symbols {
    /// Lower-case letters, apostrophe, space and the pause punctuation.
    Characters,
    /// IPA phonemes from espeak-ng (voice en-us), space and the pause punctuation.
    Phonemes,
}

impl Symbols {
    /// The symbol table: index = id. Id 0 is [`PAD`].
    pub fn table(self) -> Vec<char> {
        let mut t = vec![PAD];
        t.extend(PUNCTUATION.chars());
        t.extend('a'..='z');
        if self == Symbols::Phonemes {
            t.extend(IPA.chars());
        }
        t
    }

    /// Number of symbols (the embedding size a model needs).
    pub fn len(self) -> usize {
        self.table().len()
    }

    pub fn is_empty(self) -> bool {
        false
    }

    pub fn name(self) -> &'static str {
        match self {
            Symbols::Characters => "characters",
            Symbols::Phonemes => "phonemes",
        }
    }
}

impl std::str::FromStr for Symbols {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "characters" | "chars" => Ok(Symbols::Characters),
            "phonemes" => Ok(Symbols::Phonemes),
            other => Err(Error::Config(format!("unknown symbol set {other:?}: characters or phonemes"))),
        }
    }
}

/// Text as symbol ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The symbols kept (of the normalised text, or of its phonemes), one per id.
    pub symbols: String,
    /// Their ids in [`Symbols::table`], without the dropped ones.
    pub ids: Vec<i64>,
    /// Characters outside the symbol set, each once, in order of appearance.
    pub dropped: Vec<char>,
}

/// Normalises `text` ([`normalize`]), phonemises it with espeak-ng for [`Symbols::Phonemes`],
/// and looks the symbols up. Symbols outside the set are dropped and listed in
/// [`Encoded::dropped`]. Errors: empty text, nothing left after dropping, phonemes asked for
/// without espeak-ng.
pub fn text_to_ids(text: &str, symbols: Symbols) -> Result<Encoded> {
    if text.trim().is_empty() {
        return Err(Error::Input("the text is empty".into()));
    }
    let normal = normalize(text);
    let seq = match symbols {
        Symbols::Characters => normal,
        Symbols::Phonemes => phonemize(&normal)?,
    };
    let table = symbols.table();
    let mut ids = Vec::with_capacity(seq.len());
    let mut kept = String::with_capacity(seq.len());
    let mut dropped = Vec::new();
    for c in seq.chars() {
        match table.iter().position(|&s| s == c) {
            Some(i) if c != PAD => {
                ids.push(i as i64);
                kept.push(c);
            }
            _ => {
                if !dropped.contains(&c) {
                    dropped.push(c);
                }
            }
        }
    }
    // Nothing but spaces and punctuation is nothing to say.
    let spoken = ids.iter().any(|&i| !PUNCTUATION.contains(table[i as usize]));
    if !spoken {
        let why = if dropped.is_empty() {
            String::new()
        } else {
            format!(" (dropped as outside the {} symbol set: {})", symbols.name(), describe_chars(&dropped))
        };
        return Err(Error::Input(format!("nothing to say in {text:?}{why}")));
    }
    Ok(Encoded { symbols: kept, ids, dropped })
}

/// Cuts normalised text into pieces of at most `max_chars` characters for synthesis in several
/// passes (joined afterwards): at sentence ends (`. ! ?`) first, packing whole sentences
/// together while they fit; a sentence that is too long alone is cut after a pause (`, ; :`),
/// then between words, and a word longer than `max_chars` is cut where it must. Punctuation
/// stays with the piece it ends. `max_chars` 0 counts as 1.
pub fn split_sentences(normal: &str, max_chars: usize) -> Vec<String> {
    let max = max_chars.max(1);
    let len = |s: &str| s.chars().count();
    // Cuts `text` after any of `ends` (keeping them), trimmed, empty pieces dropped.
    let cut_after = |text: &str, ends: &[char]| -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for c in text.chars() {
            cur.push(c);
            if ends.contains(&c) {
                out.push(std::mem::take(&mut cur));
            }
        }
        out.push(cur);
        out.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
    };
    // Packs pieces into chunks of at most `max`, joined by spaces.
    let pack = |pieces: Vec<String>, out: &mut Vec<String>| {
        let mut cur = String::new();
        for p in pieces {
            if !cur.is_empty() && len(&cur) + 1 + len(&p) > max {
                out.push(std::mem::take(&mut cur));
            }
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(&p);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    };
    let mut pieces = Vec::new();
    for sentence in cut_after(normal, &['.', '!', '?']) {
        if len(&sentence) <= max {
            pieces.push(sentence);
            continue;
        }
        for clause in cut_after(&sentence, &[',', ';', ':']) {
            if len(&clause) <= max {
                pieces.push(clause);
                continue;
            }
            for word in clause.split_whitespace() {
                let chars: Vec<char> = word.chars().collect();
                pieces.extend(chars.chunks(max).map(|c| c.iter().collect::<String>()));
            }
        }
    }
    let mut out = Vec::new();
    pack(pieces, &mut out);
    out
}

/// `'x' 'é' U+200B`: characters for a one-line message.
pub fn describe_chars(chars: &[char]) -> String {
    let show = |c: &char| {
        if c.is_control() || c.is_whitespace() || (*c as u32) >= 0x2000 && (*c as u32) < 0x2070 {
            format!("U+{:04X}", *c as u32)
        } else {
            format!("'{c}'")
        }
    };
    chars.iter().map(show).collect::<Vec<_>>().join(" ")
}

/// Puts `blank` (id 0 by convention) between all ids and at both ends, as Glow-TTS's
/// `add_blank`: n ids -> 2n + 1.
pub fn intersperse(ids: &[i64], blank: i64) -> Vec<i64> {
    let mut out = Vec::with_capacity(2 * ids.len() + 1);
    out.push(blank);
    for &i in ids {
        out.push(i);
        out.push(blank);
    }
    out
}

/// Normalised text -> IPA through espeak-ng, pause punctuation kept: espeak-ng drops it, so the
/// text is cut at punctuation and each piece phonemised on its own.
fn phonemize(normal: &str) -> Result<String> {
    let mut out = String::new();
    let mut piece = String::new();
    let flush = |piece: &mut String, out: &mut String| -> Result<()> {
        if piece.chars().any(|c| c.is_alphanumeric()) {
            let ph = espeak::phonemize(piece.trim(), espeak::DEFAULT_VOICE)?;
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            out.push_str(&ph);
        }
        piece.clear();
        Ok(())
    };
    for c in normal.chars() {
        if c != ' ' && c != '\'' && PUNCTUATION.contains(c) {
            flush(&mut piece, &mut out)?;
            out.push(c);
        } else {
            piece.push(c);
        }
    }
    flush(&mut piece, &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Numbers in words

/// "zero" .. "nine", index = digit.
pub const DIGIT_WORDS: &[&str] = ONES.split_at(10).0;

pub(crate) const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] =
    ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
const SCALES: [&str; 7] = ["", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion"];

/// 0..=999 in words, American style (no "and").
fn below_thousand(n: u64) -> String {
    let (h, r) = (n / 100, n % 100);
    let rest = match r {
        0 => String::new(),
        1..=19 => ONES[r as usize].to_string(),
        _ if r % 10 == 0 => TENS[(r / 10) as usize].to_string(),
        _ => format!("{}-{}", TENS[(r / 10) as usize], ONES[(r % 10) as usize]),
    };
    match (h, rest.is_empty()) {
        (0, _) => rest,
        (_, true) => format!("{} hundred", ONES[h as usize]),
        (_, false) => format!("{} hundred {rest}", ONES[h as usize]),
    }
}

/// A cardinal in words: 1234 -> "one thousand two hundred thirty-four".
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "zero".into();
    }
    let mut groups = Vec::new();
    let mut m = n;
    while m > 0 {
        groups.push(m % 1000);
        m /= 1000;
    }
    let mut words = Vec::new();
    for (i, &g) in groups.iter().enumerate().rev() {
        if g > 0 {
            let w = below_thousand(g);
            words.push(if SCALES[i].is_empty() { w } else { format!("{w} {}", SCALES[i]) });
        }
    }
    words.join(" ")
}

/// An ordinal in words: 21 -> "twenty-first".
pub fn ordinal(n: u64) -> String {
    let c = cardinal(n);
    let cut = c.rfind([' ', '-']).map_or(0, |i| i + 1);
    let (head, last) = c.split_at(cut);
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// A year as it is read: 1999 -> "nineteen ninety-nine", 1905 -> "nineteen oh five",
/// 1900 -> "nineteen hundred", 2000 -> "two thousand", 2007 -> "two thousand seven",
/// 2024 -> "twenty twenty-four". Meant for 1000..=2999.
pub fn year(n: u64) -> String {
    let (hi, lo) = (n / 100, n % 100);
    if n % 1000 == 0 || (2000..2010).contains(&n) {
        cardinal(n)
    } else if lo == 0 {
        format!("{} hundred", cardinal(hi))
    } else if lo < 10 {
        format!("{} oh {}", cardinal(hi), cardinal(lo))
    } else {
        format!("{} {}", cardinal(hi), cardinal(lo))
    }
}

/// The plural of a number's last word: "nineteen nineties", "the sixes".
fn plural_words(w: &str) -> String {
    if let Some(stem) = w.strip_suffix('y') {
        format!("{stem}ies")
    } else if w.ends_with('x') {
        format!("{w}es")
    } else {
        format!("{w}s")
    }
}

fn digits_each(d: &str) -> String {
    d.chars().filter_map(|c| c.to_digit(10)).map(|v| ONES[v as usize]).collect::<Vec<_>>().join(" ")
}

/// An unsigned integer written in digits (commas already removed) in words; very long numbers
/// and numbers with leading zeros are read digit by digit.
fn integer_words(d: &str) -> String {
    if d.len() > 1 && d.starts_with('0') || d.len() > 18 {
        return digits_each(d);
    }
    d.parse::<u64>().map(cardinal).unwrap_or_else(|_| digits_each(d))
}

// ---------------------------------------------------------------------------------------------
// Normalisation

/// Abbreviations expanded when followed by a full stop (matched case-insensitively).
const ABBREVIATIONS: [(&str, &str); 24] = [
    ("mr", "mister"),
    ("mrs", "misses"),
    ("ms", "miss"),
    ("dr", "doctor"),
    ("st", "saint"),
    ("jr", "junior"),
    ("sr", "senior"),
    ("prof", "professor"),
    ("capt", "captain"),
    ("col", "colonel"),
    ("gen", "general"),
    ("gov", "governor"),
    ("lt", "lieutenant"),
    ("sgt", "sergeant"),
    ("rev", "reverend"),
    ("hon", "honorable"),
    ("co", "company"),
    ("ltd", "limited"),
    ("mt", "mount"),
    ("ft", "fort"),
    ("vs", "versus"),
    ("etc", "et cetera"),
    ("approx", "approximately"),
    ("dept", "department"),
];
/// Multi-letter abbreviations with inner full stops.
const DOTTED: [(&str, &str); 2] = [("e.g.", "for example"), ("i.e.", "that is")];

/// Currency signs: (sign, unit, units, sub-unit, sub-units).
const CURRENCIES: [(char, &str, &str, &str, &str); 3] = [
    ('$', "dollar", "dollars", "cent", "cents"),
    ('£', "pound", "pounds", "penny", "pence"),
    ('€', "euro", "euros", "cent", "cents"),
];
const SCALE_WORDS: [&str; 4] = ["thousand", "million", "billion", "trillion"];

/// Written English -> spoken words in lower-case characters, pause punctuation kept, single
/// spaces. See the module documentation for what it reads.
pub fn normalize(text: &str) -> String {
    let text = expand_abbreviations(&unify_unicode(text));
    let spoken = expand_numbers(&text);
    tidy(&spoken.to_lowercase())
}

/// Typographic quotes, dashes and ellipses to their plain forms.
fn unify_unicode(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{02BC}' | '`' => '\'',
            '\u{201C}' | '\u{201D}' | '\u{00AB}' | '\u{00BB}' => '"',
            '\u{2013}' | '\u{2014}' | '\u{2212}' => '-',
            '\u{2026}' => '.',
            '\u{00A0}' | '\t' | '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

fn expand_abbreviations(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let last = words.len().saturating_sub(1);
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        // Leading punctuation ("(Dr.") stays in front.
        let start = w.find(|c: char| c.is_alphanumeric()).unwrap_or(w.len());
        let (lead, core) = w.split_at(start);
        let lower = core.to_lowercase();
        let mut done = None;
        for (abbr, full) in DOTTED {
            if let Some(rest) = lower.strip_prefix(abbr) {
                done = Some((full, &core[core.len() - rest.len()..], false));
            }
        }
        if done.is_none() {
            let letters = core.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(core.len());
            if core[letters..].starts_with('.') {
                let word = lower[..letters].to_string();
                if let Some((_, full)) = ABBREVIATIONS.iter().find(|(a, _)| *a == word) {
                    done = Some((full, &core[letters + 1..], true));
                }
            }
        }
        match done {
            // At the end of the text the abbreviation's stop also ended the sentence.
            Some((full, rest, _)) if i == last && rest.is_empty() => out.push(format!("{lead}{full}.")),
            Some((full, rest, _)) => out.push(format!("{lead}{full}{rest}")),
            None => out.push(w.to_string()),
        }
    }
    out.join(" ")
}

/// Reads an integer at `i` with optional comma groups ("1,234,567"). Returns (digits without
/// commas, end index, had commas).
fn read_integer(c: &[char], mut i: usize) -> (String, usize, bool) {
    let mut d = String::new();
    let mut commas = false;
    while i < c.len() && c[i].is_ascii_digit() {
        d.push(c[i]);
        i += 1;
    }
    // ",ddd" groups, only after 1-3 leading digits and only in complete groups of three.
    if d.len() <= 3 {
        loop {
            let group = i + 4 <= c.len()
                && c[i] == ','
                && c[i + 1..i + 4].iter().all(|x| x.is_ascii_digit())
                && c.get(i + 4).is_none_or(|x| !x.is_ascii_digit());
            if !group {
                break;
            }
            d.extend(&c[i + 1..i + 4]);
            i += 4;
            commas = true;
        }
    }
    (d, i, commas)
}

/// Does `c[i..]` start with `word` (ASCII, case-insensitive) followed by a non-letter?
fn word_at(c: &[char], i: usize, word: &str) -> bool {
    let w: Vec<char> = word.chars().collect();
    i + w.len() <= c.len()
        && c[i..i + w.len()].iter().zip(&w).all(|(a, b)| a.to_ascii_lowercase() == *b)
        && c.get(i + w.len()).is_none_or(|x| !x.is_alphabetic())
}

/// Spells out numbers, currency, percentages, times and a few symbols.
fn expand_numbers(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next_digit = c.get(i + 1).is_some_and(|x| x.is_ascii_digit());
        let prev = if i > 0 { c.get(i - 1) } else { None };
        // 1. a range "5-6", or a minus sign: at the start or after a space or bracket, before a
        // digit or a currency
        if ch == '-' && next_digit && prev.is_some_and(|p| p.is_ascii_digit()) {
            out.push_str(" to ");
            i += 1;
            continue;
        }
        if ch == '-'
            && !prev.is_some_and(|p| p.is_alphanumeric())
            && (next_digit || c.get(i + 1).is_some_and(|x| CURRENCIES.iter().any(|cur| cur.0 == *x)))
        {
            out.push_str(" minus ");
            i += 1;
            continue;
        }
        // 2. currency: $5, $5.50, $0.25, $2.5 million
        if let Some(&(_, one, many, sub_one, sub_many)) = CURRENCIES.iter().find(|cur| cur.0 == ch) {
            if next_digit {
                let (units, mut j, _) = read_integer(&c, i + 1);
                let mut frac = String::new();
                if c.get(j) == Some(&'.') && c.get(j + 1).is_some_and(|x| x.is_ascii_digit()) {
                    j += 1;
                    while j < c.len() && c[j].is_ascii_digit() {
                        frac.push(c[j]);
                        j += 1;
                    }
                }
                // "$2.5 million": the scale word comes before the unit.
                let scale = SCALE_WORDS.iter().find(|w| c.get(j) == Some(&' ') && word_at(&c, j + 1, w));
                if let Some(w) = scale {
                    let num = if frac.is_empty() {
                        integer_words(&units)
                    } else {
                        format!("{} point {}", integer_words(&units), digits_each(&frac))
                    };
                    out.push_str(&format!(" {num} {w} {many} "));
                    i = j + 1 + w.len();
                    continue;
                }
                let n_units = units.parse::<u64>().unwrap_or(u64::MAX);
                // Cents: the first two decimals ("$1.5" is one dollar fifty).
                let cents = if frac.is_empty() {
                    0
                } else {
                    let two: String = frac.chars().chain("00".chars()).take(2).collect();
                    two.parse::<u64>().unwrap_or(0)
                };
                let unit_words =
                    format!("{} {}", integer_words(&units), if n_units == 1 { one } else { many });
                let sub_words =
                    format!("{} {}", cardinal(cents), if cents == 1 { sub_one } else { sub_many });
                let said = match (n_units, cents) {
                    (0, 0) => unit_words,
                    (0, _) => sub_words,
                    (_, 0) => unit_words,
                    _ => format!("{unit_words}, {sub_words}"),
                };
                out.push_str(&format!(" {said} "));
                i = j;
                continue;
            }
        }
        // 3. ".5" -> "point five"
        if ch == '.' && next_digit && !c.get(i.wrapping_sub(1)).is_some_and(|x| x.is_ascii_digit()) {
            let mut j = i + 1;
            let mut frac = String::new();
            while j < c.len() && c[j].is_ascii_digit() {
                frac.push(c[j]);
                j += 1;
            }
            out.push_str(&format!(" point {} ", digits_each(&frac)));
            i = j;
            continue;
        }
        if ch.is_ascii_digit() {
            i = number_at(&c, i, &mut out);
            continue;
        }
        // 4. symbols that are words
        match ch {
            '&' => out.push_str(" and "),
            '%' => out.push_str(" percent "),
            '+' => out.push_str(" plus "),
            '=' => out.push_str(" equals "),
            '@' => out.push_str(" at "),
            _ => out.push(ch),
        }
        i += 1;
    }
    out
}

/// Reads the number starting with the digit at `i` into `out`; returns the index after it.
fn number_at(c: &[char], i: usize, out: &mut String) -> usize {
    let (int, mut j, commas) = read_integer(c, i);
    // a time, h:mm or hh:mm, with an optional am/pm
    if !commas && int.len() <= 2 && c.get(j) == Some(&':') {
        let (mins, k, _) = read_integer(c, j + 1);
        let (h, m) = (int.parse::<u64>().unwrap_or(99), mins.parse::<u64>().unwrap_or(99));
        if mins.len() == 2 && h < 24 && m < 60 {
            let said = match m {
                0 => format!("{} o'clock", cardinal(h)),
                1..=9 => format!("{} oh {}", cardinal(h), cardinal(m)),
                _ => format!("{} {}", cardinal(h), cardinal(m)),
            };
            out.push_str(&format!(" {said}"));
            let k = ampm_at(c, k, out);
            out.push(' ');
            return k;
        }
    }
    // "5 pm"
    if !commas && int.len() <= 2 && c.get(j) != Some(&'.') {
        if let Some(h) = int.parse::<u64>().ok().filter(|h| (1..=12).contains(h)) {
            let mut said = String::new();
            let k = ampm_at(c, j, &mut said);
            if k > j {
                out.push_str(&format!(" {}{said} ", cardinal(h)));
                return k;
            }
        }
    }
    // a decimal fraction
    let mut frac = None;
    if c.get(j) == Some(&'.') && c.get(j + 1).is_some_and(|x| x.is_ascii_digit()) {
        let mut f = String::new();
        j += 1;
        while j < c.len() && c[j].is_ascii_digit() {
            f.push(c[j]);
            j += 1;
        }
        frac = Some(f);
    }
    let value = int.parse::<u64>().ok();
    let is_year = !commas
        && frac.is_none()
        && int.len() == 4
        && !int.starts_with('0')
        && value.is_some_and(|v| (1000..3000).contains(&v));
    let base = |value: Option<u64>| match (is_year, value) {
        (true, Some(v)) => year(v),
        _ => integer_words(&int),
    };
    // suffixes: ordinals (1st, 22nd, 3rd, 4th), plurals (1990s), percent
    let suffix: String = c[j..].iter().take(2).collect::<String>().to_lowercase();
    let ends_word = |k: usize| c.get(k).is_none_or(|x| !x.is_alphanumeric());
    let said = if frac.is_none() && ["st", "nd", "rd", "th"].contains(&suffix.as_str()) && ends_word(j + 2) {
        j += 2;
        value.map(ordinal).unwrap_or_else(|| digits_each(&int))
    } else if frac.is_none() && suffix.starts_with('s') && ends_word(j + 1) {
        j += 1;
        let words = base(value);
        let cut = words.rfind([' ', '-']).map_or(0, |k| k + 1);
        format!("{}{}", &words[..cut], plural_words(&words[cut..]))
    } else {
        match &frac {
            Some(f) => format!("{} point {}", integer_words(&int), digits_each(f)),
            None => base(value),
        }
    };
    out.push_str(&format!(" {said} "));
    j
}

/// Reads an optional " am" / "p.m." at `j` into `out` (" a m"); returns the index after it.
fn ampm_at(c: &[char], j: usize, out: &mut String) -> usize {
    let s = if c.get(j) == Some(&' ') { j + 1 } else { j };
    for (written, spoken) in [("a.m.", "a m"), ("p.m.", "p m"), ("am", "a m"), ("pm", "p m")] {
        let w: Vec<char> = written.chars().collect();
        let end = s + w.len();
        let matches = end <= c.len()
            && c[s..end].iter().zip(&w).all(|(a, b)| a.to_ascii_lowercase() == *b)
            && c.get(end).is_none_or(|x| !x.is_alphabetic());
        if matches {
            // "p.m." at the end of the text also ended the sentence.
            let stop = if written.ends_with('.') && end >= c.len() { "." } else { "" };
            out.push_str(&format!(" {spoken}{stop}"));
            return end;
        }
    }
    j
}

/// Lower-cased spoken text -> the final form: brackets and dashes between words become commas,
/// double quotes go, spaces are single and never before punctuation.
fn tidy(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '(' | ')' | '[' | ']' | '{' | '}' => s.push_str(" , "),
            '"' => s.push(' '),
            c => s.push(c),
        }
    }
    // A hyphen with spaces around it is a dash, i.e. a pause.
    let s = s.replace(" - ", " , ").replace(" -- ", " , ");
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        let pause_only = w.chars().all(|c| ",;:".contains(c));
        if pause_only && (out.is_empty() || out.ends_with([',', ';', ':', '.', '!', '?'])) {
            continue; // a comma from a bracket after other punctuation, or at the start
        }
        let attach = w.starts_with([',', '.', '!', '?', ';', ':']) && !out.is_empty();
        if !out.is_empty() && !attach {
            out.push(' ');
        }
        out.push_str(w);
    }
    // ", ." -> "." and a trailing comma goes.
    let mut out = out.replace(",.", ".").replace(",!", "!").replace(",?", "?");
    while out.ends_with(',') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s)
    }

    #[test]
    fn cardinals_ordinals_years() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(7), "seven");
        assert_eq!(cardinal(40), "forty");
        assert_eq!(cardinal(115), "one hundred fifteen");
        assert_eq!(cardinal(1_002_003), "one million two thousand three");
        assert_eq!(cardinal(21_000), "twenty-one thousand");
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(2), "second");
        assert_eq!(ordinal(3), "third");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty-first");
        assert_eq!(ordinal(100), "one hundredth");
        assert_eq!(ordinal(108), "one hundred eighth");
        assert_eq!(year(1999), "nineteen ninety-nine");
        assert_eq!(year(1905), "nineteen oh five");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(2000), "two thousand");
        assert_eq!(year(2007), "two thousand seven");
        assert_eq!(year(2024), "twenty twenty-four");
    }

    #[test]
    fn numbers_in_text() {
        assert_eq!(n("I have 3 cats."), "i have three cats.");
        assert_eq!(n("It cost 1,250 pounds"), "it cost one thousand two hundred fifty pounds");
        assert_eq!(n("pi is 3.14"), "pi is three point one four");
        assert_eq!(n("It was -5 degrees"), "it was minus five degrees");
        assert_eq!(n("-0.5"), "minus zero point five");
        assert_eq!(n("between 5-6"), "between five to six");
        assert_eq!(n("well-known"), "well-known");
        assert_eq!(n("the 1st, 2nd, 3rd and 21st"), "the first, second, third and twenty-first");
        assert_eq!(n("In 1999 we met"), "in nineteen ninety-nine we met");
        assert_eq!(n("the 1990s"), "the nineteen nineties");
        assert_eq!(n("Agent 007"), "agent zero zero seven");
        assert_eq!(n("50%"), "fifty percent");
        assert_eq!(n("12.5% more"), "twelve point five percent more");
        assert_eq!(n("at 10:30 pm"), "at ten thirty p m");
        assert_eq!(n("7:05"), "seven oh five");
        assert_eq!(n("at 9:00."), "at nine o'clock.");
        assert_eq!(n("It is 5 pm."), "it is five p m.");
        assert_eq!(n("by 11 a.m."), "by eleven a m.");
        assert_eq!(n("5 amps"), "five amps");
        assert_eq!(n("1,000,000 people"), "one million people");
    }

    #[test]
    fn currency() {
        assert_eq!(n("$5"), "five dollars");
        assert_eq!(n("$1"), "one dollar");
        assert_eq!(n("$5.50"), "five dollars, fifty cents");
        assert_eq!(n("$1.01"), "one dollar, one cent");
        assert_eq!(n("$0.25"), "twenty-five cents");
        assert_eq!(n("It costs $2.5 million."), "it costs two point five million dollars.");
        assert_eq!(n("$1,200 each"), "one thousand two hundred dollars each");
        assert_eq!(n("-$3"), "minus three dollars");
        assert_eq!(n("£2"), "two pounds");
    }

    #[test]
    fn abbreviations_punctuation_case_whitespace() {
        assert_eq!(n("Mr. Smith met Dr. Jones"), "mister smith met doctor jones");
        assert_eq!(n("St. Paul, Mrs. Brown"), "saint paul, misses brown");
        assert_eq!(n("apples, pears, etc."), "apples, pears, et cetera.");
        assert_eq!(n("apples, etc., and more"), "apples, et cetera, and more");
        assert_eq!(n("fruit, e.g. apples"), "fruit, for example apples");
        assert_eq!(n("  Hello,\tWORLD!  How   are you?\n"), "hello, world! how are you?");
        assert_eq!(n("Wait... what?!"), "wait... what?!");
        assert_eq!(n("He said \u{201C}no\u{201D} \u{2014} twice"), "he said no, twice");
        assert_eq!(n("one (two) three"), "one, two, three");
        assert_eq!(n("It\u{2019}s Tom & Jerry"), "it's tom and jerry");
        assert_eq!(n("Mister"), "mister");
    }

    #[test]
    fn characters_to_ids_and_dropped_symbols() {
        let e = text_to_ids("Hi, 2 you!", Symbols::Characters).unwrap();
        assert_eq!(e.symbols, "hi, two you!");
        let table = Symbols::Characters.table();
        let back: String = e.ids.iter().map(|&i| table[i as usize]).collect();
        assert_eq!(back, "hi, two you!");
        assert!(e.dropped.is_empty());
        assert!(e.ids.iter().all(|&i| i > 0));
        // Outside the set: dropped and named once each, in order.
        let e = text_to_ids("café naïve café", Symbols::Characters).unwrap();
        assert_eq!(e.dropped, vec!['é', 'ï']);
        assert_eq!(e.symbols, "caf nave caf");
        assert_eq!(e.ids.len(), "caf nave caf".len());
        assert_eq!(describe_chars(&e.dropped), "'é' 'ï'");
    }

    #[test]
    fn empty_and_unsayable_text_are_errors() {
        for text in ["", "   \n", "???", "日本語", "..."] {
            match text_to_ids(text, Symbols::Characters) {
                Err(Error::Input(msg)) => assert!(msg.contains("empty") || msg.contains("nothing"), "{msg}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let Err(Error::Input(msg)) = text_to_ids("日本", Symbols::Characters) else { panic!() };
        assert!(msg.contains("'日' '本'"), "{msg}");
    }

    #[test]
    fn long_text_splits_at_sentences_then_pauses_then_words() {
        let t = "one two. three four five! six?";
        assert_eq!(split_sentences(t, 100), vec![t]);
        assert_eq!(split_sentences(t, 20), vec!["one two.", "three four five!", "six?"]);
        assert_eq!(split_sentences(t, 25), vec!["one two. three four five!", "six?"]);
        let long = "alpha beta, gamma delta; epsilon zeta eta theta.";
        assert_eq!(
            split_sentences(long, 16),
            vec!["alpha beta,", "gamma delta;", "epsilon zeta eta", "theta."]
        );
        assert_eq!(split_sentences("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert!(split_sentences("", 10).is_empty());
        // Nothing is lost: the pieces joined are the text (without spaces where words had to be
        // cut), and each fits.
        let text = normalize(
            "Mr. Smith paid $5.50 on March 3rd, 1999; then, at 10:30 pm, he left. Why? Nobody knows!",
        );
        let squash = |s: &str| s.replace(' ', "");
        for max in [5, 12, 30, 80] {
            let parts = split_sentences(&text, max);
            assert!(parts.iter().all(|p| p.chars().count() <= max), "max {max}: {parts:?}");
            assert_eq!(squash(&parts.concat()), squash(&text), "max {max}");
            if max >= 12 {
                assert_eq!(parts.join(" "), text, "max {max}");
            }
        }
    }

    #[test]
    fn symbol_tables() {
        let c = Symbols::Characters.table();
        let p = Symbols::Phonemes.table();
        assert_eq!(c[0], PAD);
        assert_eq!(&p[..c.len()], &c[..], "phonemes extend the characters, same ids");
        // No symbol twice.
        for t in [&c, &p] {
            let mut s = t.to_vec();
            s.sort();
            s.dedup();
            assert_eq!(s.len(), t.len());
        }
        assert_eq!(Symbols::Characters.len(), c.len());
        assert_eq!("phonemes".parse::<Symbols>().unwrap(), Symbols::Phonemes);
        assert!("letters".parse::<Symbols>().is_err());
        assert_eq!(intersperse(&[5, 6], 0), vec![0, 5, 0, 6, 0]);
    }

    #[test]
    fn phonemes_through_espeak() {
        if !espeak::available() {
            println!("skipped: espeak-ng not installed");
            let Err(Error::Config(msg)) = text_to_ids("hello", Symbols::Phonemes) else { panic!() };
            assert!(msg.contains("espeak-ng"), "{msg}");
            return;
        }
        let e = text_to_ids("Hello world, 2 cats!", Symbols::Phonemes).unwrap();
        assert!(e.dropped.is_empty(), "espeak-ng printed symbols outside the set: {:?}", e.dropped);
        // Punctuation survives phonemisation; stress marks and IPA are there.
        assert!(e.symbols.contains(','), "{}", e.symbols);
        assert!(e.symbols.ends_with('!'), "{}", e.symbols);
        assert!(e.symbols.contains('ˈ'), "{}", e.symbols);
        assert!(e.symbols.contains("wˈɜːld"), "{}", e.symbols);
        let table = Symbols::Phonemes.table();
        let back: String = e.ids.iter().map(|&i| table[i as usize]).collect();
        assert_eq!(back, e.symbols);
        // The digits are phonemised as words ("two"), so no digit is left.
        assert!(!e.symbols.chars().any(|c| c.is_ascii_digit()));
        // Every symbol espeak-ng prints for the generated corpus sentences is in the set.
        let mut dropped = Vec::new();
        for s in super::super::corpus::generate_sentences(120, 4).iter().skip(80) {
            for c in text_to_ids(s, Symbols::Phonemes).unwrap().dropped {
                if !dropped.contains(&c) {
                    dropped.push(c);
                }
            }
        }
        assert!(dropped.is_empty(), "outside the phoneme set: {}", describe_chars(&dropped));
    }
}
