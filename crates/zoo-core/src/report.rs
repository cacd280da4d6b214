//! Report pages: one self-contained HTML file (pictures and audio embedded as data URLs, no
//! script, no network) that sets models side by side. `zoo demo` writes its `report.html` with
//! it; any program can build a [`Page`] of its own.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::{Error, Result};

/// A page: a title, a few lines under it, then sections.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub title: String,
    pub intro: Vec<String>,
    pub sections: Vec<Section>,
}

/// One section, e.g. one model family.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    /// Sentences shown first (what was made, how fast).
    pub lines: Vec<String>,
    /// Label / value rows shown as a small table (parameters, time, ...).
    pub facts: Vec<(String, String)>,
    pub items: Vec<Item>,
}

/// Something shown in a section.
#[derive(Debug, Clone)]
pub enum Item {
    /// A file, embedded by its kind: .png/.jpg as a picture, .wav as an audio player, .txt as
    /// preformatted text. Other kinds are refused when rendering.
    File { path: PathBuf, caption: String },
    /// Markdown (e.g. a model card), rendered to HTML; raw HTML inside it is shown as text.
    Markdown { title: String, text: String },
}

/// The page as one HTML document.
pub fn render(page: &Page) -> Result<String> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&page.title),
        esc(&page.title)
    );
    for line in &page.intro {
        let _ = writeln!(h, "<p>{}</p>", esc(line));
    }
    if page.sections.len() > 1 {
        h.push_str("<nav>");
        for (i, s) in page.sections.iter().enumerate() {
            let _ = write!(h, "<a href=\"#s{i}\">{}</a> ", esc(&s.title));
        }
        h.push_str("</nav>\n");
    }
    for (i, s) in page.sections.iter().enumerate() {
        let _ = writeln!(
            h,
            "<section id=\"s{i}\" data-section=\"{}\">\n<h2>{}</h2>",
            esc(&s.title),
            esc(&s.title)
        );
        for line in &s.lines {
            let _ = writeln!(h, "<p>{}</p>", esc(line));
        }
        if !s.facts.is_empty() {
            h.push_str("<table class=\"facts\">\n");
            for (k, v) in &s.facts {
                let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
            }
            h.push_str("</table>\n");
        }
        h.push_str("<div class=\"items\">\n");
        for item in &s.items {
            match item {
                Item::File { path, caption } => file_html(&mut h, path, caption)?,
                Item::Markdown { title, text } => {
                    let _ = writeln!(
                        h,
                        "<details class=\"card\"><summary>{}</summary>\n{}</details>",
                        esc(title),
                        markdown(text)
                    );
                }
            }
        }
        h.push_str("</div>\n</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

/// Writes the page to `path` (atomically).
pub fn write(page: &Page, path: &Path) -> Result<()> {
    let html = render(page)?;
    crate::fsutil::atomic_write_bytes(path, html.as_bytes())
}

fn file_html(h: &mut String, path: &Path, caption: &str) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mime = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "wav" => "audio/wav",
        "txt" => "text/plain",
        _ => return Err(Error::bad_file(path, "a report embeds only .png, .jpg, .wav and .txt files")),
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let _ = write!(h, "<figure>");
    match mime {
        "text/plain" => {
            let _ = write!(h, "<pre>{}</pre>", esc(&String::from_utf8_lossy(&bytes)));
        }
        "audio/wav" => {
            let _ = write!(
                h,
                "<audio controls preload=\"auto\" src=\"data:{mime};base64,{}\"></audio>",
                b64(&bytes)
            );
        }
        _ => {
            let _ = write!(h, "<img alt=\"{}\" src=\"data:{mime};base64,{}\">", esc(&name), b64(&bytes));
        }
    }
    let _ = writeln!(
        h,
        "<figcaption>{}</figcaption></figure>",
        esc(if caption.is_empty() { &name } else { caption })
    );
    Ok(())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Markdown to HTML with raw HTML escaped (a card is text, not markup to trust) and relative
/// links dropped (they point into the models folder, not next to the page).
fn markdown(text: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES).filter_map(|ev| match ev {
        Event::Html(s) | Event::InlineHtml(s) => Some(Event::Text(s)),
        Event::Start(Tag::Link { .. }) | Event::End(TagEnd::Link) => None,
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        other => Some(other),
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, parser);
    out
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;background:#fff}\
h1{margin-bottom:.2em}nav a{margin-right:1em}section{border-top:1px solid #ddd;margin-top:2em}\
.items{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}figure{margin:0}\
figure img{image-rendering:pixelated;max-width:min(100%,560px);min-width:180px;border:1px solid #ccc}\
figcaption{font-size:.85em;color:#555;max-width:420px}pre{white-space:pre-wrap;max-width:640px;background:#f6f6f6;padding:.8em}\
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}\
table.facts th{background:#f3f3f3}details.card{flex-basis:100%}details.card summary{cursor:pointer;color:#345}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_embeds_its_files_and_escapes_text() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        crate::image::save_image(&tch::Tensor::zeros([1, 4, 4], (tch::Kind::Float, tch::Device::Cpu)), &png)
            .unwrap();
        let txt = dir.path().join("s.txt");
        std::fs::write(&txt, "<b>ROMEO</b> & co").unwrap();
        let page = Page {
            title: "zoo <demo>".into(),
            intro: vec!["one line".into()],
            sections: vec![Section {
                title: "gan".into(),
                lines: vec!["drew 100 digits".into()],
                facts: vec![("parameters".into(), "575,400".into())],
                items: vec![
                    Item::File { path: png.clone(), caption: "digits".into() },
                    Item::File { path: txt, caption: String::new() },
                    Item::Markdown {
                        title: "model card".into(),
                        text: "# card\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n<script>x</script>\n\nsee [the preset](../x.json)\n"
                            .into(),
                    },
                ],
            }],
        };
        let h = render(&page).unwrap();
        assert!(h.contains("<title>zoo &lt;demo&gt;</title>"), "{h}");
        let b = std::fs::read(&png).unwrap();
        assert!(h.contains(&format!("src=\"data:image/png;base64,{}\"", b64(&b))));
        assert!(h.contains("&lt;b&gt;ROMEO&lt;/b&gt; &amp; co"));
        assert!(h.contains("<td>1</td>"), "the card's table is rendered: {h}");
        assert!(!h.contains("<script>") && h.contains("&lt;script&gt;"), "raw HTML is shown as text: {h}");
        assert!(
            !h.contains("../x.json") && h.contains("see the preset"),
            "links into models/ are dropped: {h}"
        );
        assert!(h.contains("data-section=\"gan\""));
        // Only kinds a browser shows inline are embedded.
        let bad = Page {
            sections: vec![Section {
                items: vec![Item::File { path: dir.path().join("w.safetensors"), caption: String::new() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(render(&bad).unwrap_err().to_string().contains("w.safetensors"));
    }
}
