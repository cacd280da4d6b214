//! Architecture tables: each part of a model with its tensor shapes and parameter count,
//! counted from the model's variables (so the numbers are the real ones). `zoo <family> arch`
//! prints them.
use std::collections::BTreeMap;

/// One line of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub depth: usize,
    pub name: String,
    pub shape: String,
    /// `None` for lines that are structure, not parameters (residual adds, an activation's shape).
    pub params: Option<i64>,
}

impl Part {
    pub fn new(depth: usize, name: impl Into<String>, shape: impl Into<String>, params: Option<i64>) -> Part {
        Part { depth, name: name.into(), shape: shape.into(), params }
    }
}

/// Thousands separated by commas: 1234567 -> "1,234,567".
pub fn commas(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The table as text. Lines at depth > 0 are inside a repeated block and count one layer.
pub fn render(title: &str, parts: &[Part], total: i64) -> String {
    let label =
        |p: &Part| format!("{}{}", "  ".repeat(p.depth + 1) + if p.depth > 0 { "| " } else { "" }, p.name);
    let w1 = parts.iter().map(|p| label(p).chars().count()).max().unwrap_or(0);
    let w2 = parts.iter().map(|p| p.shape.chars().count()).max().unwrap_or(0);
    let mut out = format!("{title}\n");
    for p in parts {
        let params = match p.params {
            Some(n) if p.depth > 0 => format!("{} per layer", commas(n)),
            Some(n) => commas(n),
            None => String::new(),
        };
        let line = format!("{:<w1$}  {:<w2$}  {params}", label(p), p.shape);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!("{:<w1$}  {:<w2$}  {}\n", "  total parameters", "", commas(total)));
    out
}

/// `main.10.weight` sorts after `main.9.weight`.
pub fn natural_key(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|p| p.parse::<u64>().map(|n| (n, String::new())).unwrap_or((u64::MAX, p.to_string())))
        .collect()
}

/// One row per module of `vars` (name, shape): variables grouped by their module path cut to at
/// most `levels` components (`encoder.down_blocks.0.resnets.1.conv1.weight` with 3 levels is
/// in `encoder.down_blocks.0`), in natural name order, each row with its variables' shapes
/// (or their count, for a group of many) and its parameter count. Only names passing `keep`.
pub fn module_rows(vars: &[(String, Vec<i64>)], levels: usize, keep: impl Fn(&str) -> bool) -> Vec<Part> {
    // natural key of the module -> (module, its variables (name within it, shape))
    type Members = Vec<(String, Vec<i64>)>;
    let mut groups: BTreeMap<Vec<(u64, String)>, (String, Members)> = BTreeMap::new();
    for (name, shape) in vars.iter().filter(|(n, _)| keep(n)) {
        let comps: Vec<&str> = name.split('.').collect();
        let module =
            comps[..comps.len().saturating_sub(1)].iter().take(levels.max(1)).copied().collect::<Vec<_>>();
        let group = if module.is_empty() { name.clone() } else { module.join(".") };
        let leaf = name.strip_prefix(&format!("{group}.")).unwrap_or(name).to_string();
        groups
            .entry(natural_key(&group))
            .or_insert_with(|| (group, Vec::new()))
            .1
            .push((leaf, shape.clone()));
    }
    groups
        .into_values()
        .map(|(group, mut members)| {
            members.sort_by_key(|(n, _)| natural_key(n));
            let params: i64 = members.iter().map(|(_, s)| s.iter().product::<i64>()).sum();
            let shape = if members.len() <= 3 {
                members.iter().map(|(n, s)| format!("{n} {s:?}")).collect::<Vec<_>>().join(", ")
            } else {
                format!("{} tensors", members.len())
            };
            Part::new(0, group, shape, Some(params))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_group_modules_in_natural_order_and_add_up() {
        let v = |n: &str, s: &[i64]| (n.to_string(), s.to_vec());
        let vars = vec![
            v("main.10.weight", &[3, 3]),
            v("main.2.weight", &[4, 2]),
            v("main.2.bias", &[4]),
            v("encoder.down.0.resnets.1.conv.weight", &[2, 2]),
            v("encoder.down.0.resnets.0.conv.weight", &[2, 2]),
            v("label_emb.weight", &[10, 5]),
            v("scale", &[1]),
        ];
        let rows = module_rows(&vars, 3, |_| true);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["encoder.down.0", "label_emb", "main.2", "main.10", "scale"]);
        assert_eq!(rows[0].params, Some(8));
        assert_eq!(rows[2].shape, "bias [4], weight [4, 2]");
        let total: i64 = rows.iter().filter_map(|r| r.params).sum();
        assert_eq!(total, 9 + 8 + 12 + 50 + 1);
        assert_eq!(module_rows(&vars, 3, |n| n.starts_with("main")).len(), 2);
        let text = render("t", &rows, total);
        assert!(
            text.contains("main.10") && text.contains("total parameters") && text.contains(&commas(total))
        );
        assert_eq!(commas(1_234_567), "1,234,567");
        assert_eq!(commas(-1000), "-1,000");
        assert_eq!(commas(12), "12");
    }
}
