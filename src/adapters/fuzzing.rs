//! What the fuzz targets share (test builds only): generators of hostile
//! text and JSON, and the seed corpus in `tests/fuzz/corpus/<target>/`.
//!
//! The targets are proptest properties (`wire::fuzz`, `http::fuzz`), run
//! on the stable toolchain by `cargo test`. `PROPTEST_CASES` sets how many
//! inputs each property tries (256 when unset; CI sets more); a failing
//! input is shrunk and saved under `proptest-regressions/`, and every
//! saved one is tried first on each later run.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Text that breaks naive handling: controls, NUL, combining marks,
/// zero-width and bidirectional marks, a BOM, astral characters, the
/// largest code point, and JSON's own punctuation.
pub fn odd_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range(' ', '~'),
        1 => prop::sample::select(vec![
            '\0', '\u{1}', '\t', '\n', '\r', '\u{7f}', '\u{85}', '\u{a0}', '\u{301}', '\u{200b}',
            '\u{200d}', '\u{202e}', '\u{2028}', '\u{feff}', '\u{fffd}', '\u{ffff}', '\u{1f600}',
            '\u{10ffff}', 'ß', 'İ', 'ﬀ', '"', '\\', '{', '}', '[', ']', ':', ',',
        ]),
        1 => any::<char>(),
    ]
}

/// A string of [`odd_char`]s, mostly short, sometimes past every limit.
pub fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(odd_char(), 0..24).prop_map(String::from_iter),
        1 => (odd_char(), prop::sample::select(vec![63usize, 64, 65, 127, 128, 129, 4000, 4001]))
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        1 => Just(" \t\n ".to_owned()),
    ]
}

/// JSON tokens no `serde_json::Value` holds: numbers out of every range,
/// lone and paired surrogate escapes, nesting past the parser's limit.
const RAW_TOKENS: &[&str] = &[
    "1e400",
    "-1e400",
    "18446744073709551616",
    "-9223372036854775809",
    "-0",
    "1.0",
    "1E2",
    r#""\ud800""#,
    r#""\udc00x""#,
    r#""\ud83d\ude00""#,
    r#""\u0000""#,
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

/// Where a raw token goes: a string no generator makes otherwise, replaced
/// in the serialized text by [`with_raw_tokens`].
fn raw_placeholder(i: usize) -> String {
    format!("@@raw{i}@@")
}

/// The text of `value` with each raw placeholder replaced by its token.
pub fn with_raw_tokens(value: &Value) -> String {
    let mut text = value.to_string();
    for (i, token) in RAW_TOKENS.iter().enumerate() {
        text = text.replace(&format!("\"{}\"", raw_placeholder(i)), token);
    }
    text
}

/// A JSON value for a field: the kinds a field could wrongly hold, edge
/// numbers, odd strings, deep nesting (through raw tokens).
pub fn field_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![0i64, 1, -1, 50, 200, 201, i64::MAX, i64::MIN])
            .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<f64>().prop_map(Value::from),
        odd_string().prop_map(Value::String),
        (0..RAW_TOKENS.len()).prop_map(|i| Value::String(raw_placeholder(i))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((odd_string(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON object with some of `names` (and odd others) holding
/// [`field_value`]s or, more often, the value of `good` for that name.
pub fn object_of(
    names: &'static [&'static str],
    good: fn(&str) -> Value,
) -> impl Strategy<Value = Map<String, Value>> {
    let field = prop_oneof![
        4 => prop::sample::select(names).prop_map(move |n| (n.to_owned(), good(n))),
        2 => (prop::sample::select(names), field_value()).prop_map(|(n, v)| (n.to_owned(), v)),
        1 => (odd_string(), field_value()),
    ];
    prop::collection::vec(field, 0..6).prop_map(|kv| kv.into_iter().collect())
}

/// Edits applied to a text: the ways a frame arrives broken.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Unchanged.
    None,
    /// Cut at a character boundary (the fraction of its length kept).
    Truncate(f64),
    /// A character put in at a position (fraction of the length).
    Insert(f64, char),
    /// A character taken out at a position (fraction of the length).
    Remove(f64),
    /// A key written a second time before the closing brace.
    DuplicateKey(String, Value),
    /// Wrapped in many arrays.
    Nest(usize),
}

/// Some [`Mutation`], mostly none.
pub fn mutation(keys: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => Just(Mutation::None),
        1 => (0.0..1.0f64).prop_map(Mutation::Truncate),
        1 => (0.0..1.0f64, odd_char()).prop_map(|(at, c)| Mutation::Insert(at, c)),
        1 => (0.0..1.0f64).prop_map(Mutation::Remove),
        1 => (prop::sample::select(keys), field_value())
            .prop_map(|(k, v)| Mutation::DuplicateKey(k.to_owned(), v)),
        1 => prop::sample::select(vec![1usize, 127, 128, 129, 5000]).prop_map(Mutation::Nest),
    ]
}

impl Mutation {
    /// `text` with this edit made.
    pub fn apply(&self, text: &str) -> String {
        let boundary = |at: f64| {
            let mut i = (text.len() as f64 * at) as usize;
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        match self {
            Self::None => text.to_owned(),
            Self::Truncate(at) => text[..boundary(*at)].to_owned(),
            Self::Insert(at, c) => {
                let i = boundary(*at);
                format!("{}{c}{}", &text[..i], &text[i..])
            }
            Self::Remove(at) => {
                let i = boundary(*at);
                let mut out = text.to_owned();
                if i < out.len() {
                    out.remove(i);
                }
                out
            }
            Self::DuplicateKey(key, value) => match text.strip_suffix('}') {
                Some(open) => format!("{open},{}:{value}}}", Value::from(key.as_str())),
                None => text.to_owned(),
            },
            Self::Nest(depth) => format!("{}{text}{}", "[".repeat(*depth), "]".repeat(*depth)),
        }
    }
}

/// The seed inputs of `target`, from `tests/fuzz/corpus/<target>/`, by file
/// name. Every run replays them; they are the cases worth keeping (each
/// kind of request, each bug found).
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fuzz",
        "corpus",
        target,
    ]
    .iter()
    .collect();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

/// A corpus input of `target` as text, with a [`Mutation`] made to it.
pub fn mutated_corpus(
    target: &str,
    keys: &'static [&'static str],
) -> impl Strategy<Value = String> + use<> {
    let seeds: Vec<String> = corpus(target)
        .into_iter()
        .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    (
        prop::sample::select(seeds),
        prop::collection::vec(mutation(keys), 1..4),
    )
        .prop_map(|(seed, edits)| edits.iter().fold(seed, |text, m| m.apply(&text)))
}
