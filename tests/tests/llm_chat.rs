//! Chat templates against transformers: four real-world templates (ChatML as Qwen2 ships it,
//! Llama-3, Zephyr, Llama-2 with `raise_exception`) rendered by zoo-llm's minijinja setup must
//! give exactly the strings transformers' `apply_chat_template` gave
//! (tests/fixtures/llm/chat_templates.json, from tools/make_llm_fixtures.py), and raise
//! where transformers raised.
use std::collections::BTreeMap;
use std::path::PathBuf;

use zoo_llm::chat::{ChatTemplate, Message};

#[test]
fn templates_render_as_transformers_renders_them() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/llm/chat_templates.json");
    let text = std::fs::read_to_string(path).unwrap();
    let templates: serde_json::Value = serde_json::from_str(&text).unwrap();
    let templates = templates.as_array().unwrap();
    assert_eq!(templates.len(), 4);
    let (mut rendered, mut raised) = (0, 0);
    for t in templates {
        let name = t["name"].as_str().unwrap();
        let special: BTreeMap<String, String> = ["bos_token", "eos_token"]
            .iter()
            .map(|k| (k.to_string(), t[*k].as_str().unwrap().to_string()))
            .collect();
        let tmpl = ChatTemplate::new(t["template"].as_str().unwrap(), special).unwrap();
        for case in t["cases"].as_array().unwrap() {
            let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
            let gen = case["add_generation_prompt"].as_bool().unwrap();
            let ours = tmpl.render(&messages, gen);
            match (case.get("rendered").and_then(|r| r.as_str()), case.get("error")) {
                (Some(want), _) => {
                    assert_eq!(
                        ours.unwrap(),
                        want,
                        "{name}, {} messages, generation prompt {gen}",
                        messages.len()
                    );
                    rendered += 1;
                }
                (None, Some(err)) => {
                    let e = ours.unwrap_err().to_string();
                    assert_eq!(e, format!("chat template: {}", err.as_str().unwrap()), "{name}");
                    raised += 1;
                }
                (None, None) => panic!("{name}: case without a result"),
            }
        }
    }
    assert_eq!((rendered, raised), (22, 2));
}
