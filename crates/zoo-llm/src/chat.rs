//! Chat templates: the Jinja template a chat model ships in `tokenizer_config.json`
//! (`chat_template`, or a `chat_template.jinja` file next to it, as transformers 5 saves it),
//! rendered with minijinja the way transformers' `apply_chat_template` renders it.
//!
//! transformers renders with jinja2 in a sandbox with `trim_blocks` and `lstrip_blocks` on,
//! the `loopcontrols` extension, a `raise_exception(msg)` function, and the variables
//! `messages`, `add_generation_prompt` and the tokenizer's special tokens (`bos_token`,
//! `eos_token`, ...). We do the same; Python's string methods that templates call
//! (`content.strip()`, `.startswith(..)`) come from minijinja-contrib's pycompat.
use std::collections::BTreeMap;
use std::path::Path;

use minijinja::value::Serde;
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

/// A compiled chat template and the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` as text (the ones the config names).
    special: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("special", &self.special).finish_non_exhaustive()
    }
}

const NAME: &str = "chat_template";
/// Instructions one rendering may take (minijinja's fuel): real templates take a few dozen per
/// message.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// A special token in `tokenizer_config.json`: a string, or an added-token object with
/// `content` (older files), or null.
fn token_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// Compiles `source`; `special` maps names such as `bos_token` to their text.
    pub fn new(source: &str, special: BTreeMap<String, String>) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Input(format!("chat template: {e}")))?;
        env.set_syntax(syntax);
        // A bound on the work of one rendering, so a template with a runaway loop ends with an
        // error instead of growing without limit.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| Error::Input(format!("chat template does not compile: {e}")))?;
        Ok(ChatTemplate { env, special })
    }

    /// The template of a model folder: `chat_template` in `tokenizer_config.json` (a string,
    /// or a list of named templates of which `default` is used), else `chat_template.jinja`.
    /// A folder without one is an error that says so.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::config(&cfg_path, format!("not valid JSON: {e}")))?
        } else {
            serde_json::Value::Null
        };
        let special: BTreeMap<String, String> = ["bos_token", "eos_token", "unk_token", "pad_token"]
            .into_iter()
            .filter_map(|k| cfg.get(k).and_then(token_text).map(|t| (k.to_string(), t)))
            .collect();
        let jinja_path = dir.join("chat_template.jinja");
        let source = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string))
                .ok_or_else(|| {
                    Error::config(&cfg_path, "chat_template is a list without a 'default' template")
                })?,
            _ if jinja_path.is_file() => {
                std::fs::read_to_string(&jinja_path).map_err(|e| Error::io(&jinja_path, e))?
            }
            _ => {
                return Err(Error::Input(format!(
                    "{}: no chat template (neither `chat_template` in tokenizer_config.json nor \
                     chat_template.jinja): this is a base model, not a chat model; use `zoo llm generate`",
                    dir.display()
                )))
            }
        };
        Self::new(&source, special)
    }

    /// The special token `name` (e.g. `eos_token`), if the config names it.
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special.get(name).map(String::as_str)
    }

    /// The prompt text of a conversation; with `add_generation_prompt`, ending in the header
    /// that starts the assistant's reply. A template's `raise_exception` is an error with
    /// its message.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template(NAME).map_err(|e| Error::Input(format!("chat template: {e}")))?;
        let mut ctx: BTreeMap<String, Value> =
            self.special.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        ctx.insert("messages".into(), Value::from(Serde(messages)));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        tmpl.render(Value::from(Serde(&ctx))).map_err(|e| {
            let msg = match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid operation").to_string(),
                ErrorKind::OutOfFuel => format!(
                    "stopped after {TEMPLATE_FUEL} steps (a runaway loop?); real templates need a few dozen per message"
                ),
                _ => e.to_string(),
            };
            Error::Input(format!("chat template: {msg}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special() -> BTreeMap<String, String> {
        [("bos_token", "<s>"), ("eos_token", "</s>")].map(|(k, v)| (k.to_string(), v.to_string())).into()
    }

    #[test]
    fn renders_with_trimmed_blocks_python_methods_and_special_tokens() {
        let t = ChatTemplate::new(
            "{% for m in messages %}\n  {{ bos_token }}[{{ m.role }}] {{ m.content.strip() }}{{ eos_token }}\n  {% endfor %}\n{% if add_generation_prompt %}[assistant]{% endif %}",
            special(),
        )
        .unwrap();
        let msgs = [Message::new("user", "  hi "), Message::new("assistant", "yo")];
        // Newlines after block tags go (trim_blocks), so does the indent before `{% endfor %}`
        // (lstrip_blocks); the indent before `{{` stays, as in jinja2.
        assert_eq!(t.render(&msgs, false).unwrap(), "  <s>[user] hi</s>\n  <s>[assistant] yo</s>\n");
        assert_eq!(t.render(&msgs[..1], true).unwrap(), "  <s>[user] hi</s>\n[assistant]");
    }

    #[test]
    fn raise_exception_and_bad_templates_are_errors() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", special()).unwrap();
        let e = t.render(&[], true).unwrap_err().to_string();
        assert_eq!(e, "chat template: roles must alternate");
        let e = ChatTemplate::new("{% for %}", special()).unwrap_err().to_string();
        assert!(e.contains("does not compile"), "{e}");
        // A runaway loop ends with an error instead of growing without bound.
        let t = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            special(),
        )
        .unwrap();
        let e = t.render(&[], true).unwrap_err().to_string();
        assert!(e.contains("runaway loop"), "{e}");
    }

    #[test]
    fn folder_without_template_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = ChatTemplate::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no chat template"), "{e}");
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]}"#,
        )
        .unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap();
        assert_eq!(t.render(&[Message::new("user", "x")], false).unwrap(), "<s>x");
        assert_eq!(t.special_token("eos_token"), Some("</s>"));
    }
}
