//! From a dotted key path (`lane[1].relay.pulse_ms`) to its line and column in the file, and
//! from a TOML parser's byte span back to the key path, so that every error names the file,
//! the line and the key the person must fix.

use std::path::Path;

use super::ConfigError;

/// A semantic error at `key`, with the line and column of that key in `text`.
pub(super) fn located(text: &str, path: &Path, key: String, message: String) -> ConfigError {
    let (line, column) = Locator::new(text)
        .offset_of(&key)
        .map(|o| line_col(text, o))
        .unzip();
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key: Some(key),
        message,
    }
}

/// Turns a toml/serde error into file:line:column with the key the person must fix.
pub(super) fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    // serde's words for a key beside `kind = "none"` / `"recording"`.
    let message = e
        .message()
        .trim()
        .replace("there are no fields", "this kind takes no other key");
    let loc = Locator::new(text);
    let mut key = match e.span() {
        Some(span) if loc.doc.is_some() => loc.key_at(span.start),
        // The text is not TOML at all: the key is whatever is left of `=` on that line.
        Some(span) => key_on_line(text, span.start),
        None => None,
    };
    // Values inside tagged tables (`kind = ...`) arrive without their own span: find the
    // value the message quotes among the table's keys.
    if let (Some(k), Some(v)) = (&key, quoted_value(&message)) {
        if let Some(inner) = loc.value_under(k, &v) {
            key = Some(inner);
        }
    }
    // serde names the field it missed or did not know; the span is the table around it.
    let field = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .filter(|f| !f.is_empty());
    // A whole missing section is missing from the top, whatever span serde gave.
    let top_level = ["station", "lane", "tariff", "journal", "aggregator"];
    if let Some(f) = field.filter(|f| {
        top_level.contains(f) && message.starts_with("missing") && loc.offset_of_exact(f).is_none()
    }) {
        key = Some(f.to_string());
    }
    if let Some(f) = field {
        let ends_with_field = key
            .as_deref()
            .is_some_and(|k| k == f || k.ends_with(&format!(".{f}")));
        if !ends_with_field {
            key = Some(match key {
                Some(k) if !k.is_empty() => format!("{k}.{f}"),
                _ => f.to_string(),
            });
        }
    }
    let offset = key
        .as_deref()
        .and_then(|k| loc.offset_of_exact(k))
        .or_else(|| e.span().map(|s| s.start));
    let (line, column) = offset.map(|o| line_col(text, o)).unzip();
    ConfigError {
        file: path.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

/// The value an "invalid value" / "unknown variant" message quotes, as written in TOML.
fn quoted_value(message: &str) -> Option<String> {
    for prefix in [
        "unknown variant `",
        "integer `",
        "floating point `",
        "boolean `",
    ] {
        if let Some(rest) = message.split(prefix).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    message
        .split("string \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string)
}

/// For text the TOML parser rejects: the dotted key written on the line at `offset`, under
/// the table header in force there (`[[lane]]` headers counted for the index).
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let name = line.split_once('=')?.0.trim();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    let before = text.get(..start)?;
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for l in before.lines().map(str::trim) {
        if let Some(h) = l.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            let h = h.trim().to_string();
            let n = counts.entry(h.clone()).or_insert(0);
            table = format!("{h}[{n}]");
            *n += 1;
        } else if let Some(h) = l.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = h.trim().to_string();
        }
    }
    Some(join(&table, name))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Maps dotted key paths (`lane[1].relay.pulse_ms`) to places in the text and back, from the
/// spans the TOML parser keeps.
struct Locator<'a> {
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

/// One step of a key path: a name and, for arrays, an index.
fn split_path(key: &str) -> Vec<(&str, Vec<usize>)> {
    key.split('.')
        .map(|seg| {
            let mut parts = seg.split('[');
            let name = parts.next().unwrap_or(seg);
            let idx = parts
                .filter_map(|p| p.trim_end_matches(']').parse().ok())
                .collect();
            (name, idx)
        })
        .collect()
}

fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    /// Where `key` is written, or else the nearest enclosing key or table that is (a missing
    /// key is reported at its table).
    fn offset_of(&self, key: &str) -> Option<usize> {
        self.walk(key).map(|(o, _)| o)
    }

    /// Where `key` itself is written, if it is.
    fn offset_of_exact(&self, key: &str) -> Option<usize> {
        self.walk(key).filter(|(_, full)| *full).map(|(o, _)| o)
    }

    fn walk(&self, key: &str) -> Option<(usize, bool)> {
        let doc = self.doc.as_ref()?;
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut best: Option<usize> = None;
        let steps = split_path(key);
        for (n, (name, indices)) in steps.iter().enumerate() {
            let Some((k, item)) = table.get_key_value(name) else {
                return best.map(|b| (b, false));
            };
            best = k.span().map(|s| s.start).or(best);
            // Where the indices lead: a table (of an array of tables or inline) or a value.
            let mut next: Option<&dyn toml_edit::TableLike> = item.as_table_like();
            let mut value: Option<&toml_edit::Value> = item.as_value();
            for (d, i) in indices.iter().enumerate() {
                let aot = if d == 0 {
                    item.as_array_of_tables()
                } else {
                    None
                };
                if let Some(t) = aot.and_then(|aot| aot.get(*i)) {
                    if let Some(s) = t.span() {
                        best = Some(s.start);
                    }
                    next = Some(t);
                    value = None;
                } else if let Some(v) = value.and_then(|v| v.as_array()).and_then(|a| a.get(*i)) {
                    if let Some(s) = v.span() {
                        best = Some(s.start);
                    }
                    next = v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike);
                    value = Some(v);
                } else {
                    return best.map(|b| (b, false));
                }
            }
            if n + 1 == steps.len() {
                return best.map(|b| (b, true));
            }
            match next {
                Some(t) => table = t,
                None => return best.map(|b| (b, false)),
            }
        }
        best.map(|b| (b, false))
    }

    /// The path of the one value under `key` (a table or array) written as `value`.
    fn value_under(&self, key: &str, value: &str) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut found = Vec::new();
        collect_values(doc.as_table(), "", &mut found);
        let mut hits = found.into_iter().filter(|(p, v)| {
            (p.starts_with(&format!("{key}.")) || p.starts_with(&format!("{key}["))) && v == value
        });
        match (hits.next(), hits.next()) {
            (Some((p, _)), None) => Some(p),
            _ => None,
        }
    }

    /// The dotted path of the key or value written at `offset`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut best = None;
        find_in(doc.as_table(), "", offset, &mut best);
        best
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Depth-first search for the deepest key whose name or value covers `offset`.
fn find_in(
    table: &dyn toml_edit::TableLike,
    prefix: &str,
    offset: usize,
    best: &mut Option<String>,
) {
    for (name, _) in table.iter() {
        let Some((k, item)) = table.get_key_value(name) else {
            continue;
        };
        let path = join(prefix, name);
        if contains(k.span(), offset) {
            *best = Some(path);
            return;
        }
        match item {
            toml_edit::Item::Table(t) => {
                if contains(t.span(), offset) {
                    *best = Some(path.clone());
                }
                find_in(t, &path, offset, best);
            }
            toml_edit::Item::ArrayOfTables(aot) => {
                for (i, t) in aot.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if contains(t.span(), offset) {
                        *best = Some(p.clone());
                    }
                    find_in(t, &p, offset, best);
                }
            }
            toml_edit::Item::Value(v) => {
                if contains(v.span(), offset) {
                    *best = Some(path.clone());
                    find_in_value(v, &path, offset, best);
                }
            }
            toml_edit::Item::None => {}
        }
    }
}

/// Every scalar value with its path and its text (strings unquoted).
fn collect_values(table: &dyn toml_edit::TableLike, prefix: &str, out: &mut Vec<(String, String)>) {
    for (name, item) in table.iter() {
        let path = join(prefix, name);
        match item {
            toml_edit::Item::Table(t) => collect_values(t, &path, out),
            toml_edit::Item::ArrayOfTables(aot) => {
                for (i, t) in aot.iter().enumerate() {
                    collect_values(t, &format!("{path}[{i}]"), out);
                }
            }
            toml_edit::Item::Value(v) => collect_value(v, &path, out),
            toml_edit::Item::None => {}
        }
    }
}

fn collect_value(v: &toml_edit::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        toml_edit::Value::InlineTable(t) => collect_values(t, path, out),
        toml_edit::Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                collect_value(e, &format!("{path}[{i}]"), out);
            }
        }
        toml_edit::Value::String(s) => out.push((path.to_string(), s.value().clone())),
        toml_edit::Value::Integer(n) => out.push((path.to_string(), n.value().to_string())),
        toml_edit::Value::Float(f) => out.push((path.to_string(), f.value().to_string())),
        toml_edit::Value::Boolean(b) => out.push((path.to_string(), b.value().to_string())),
        toml_edit::Value::Datetime(d) => out.push((path.to_string(), d.value().to_string())),
    }
}

fn find_in_value(v: &toml_edit::Value, path: &str, offset: usize, best: &mut Option<String>) {
    match v {
        toml_edit::Value::InlineTable(t) => find_in(t, path, offset, best),
        toml_edit::Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                if contains(e.span(), offset) {
                    let p = format!("{path}[{i}]");
                    *best = Some(p.clone());
                    find_in_value(e, &p, offset, best);
                }
            }
        }
        _ => {}
    }
}
