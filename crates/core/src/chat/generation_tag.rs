//! transformers' `{% generation %}` … `{% endgeneration %}` block (its `AssistantTracker` jinja
//! extension, which marks the assistant's tokens for training masks) renders its body unchanged.
//! minijinja has no such tag, so a template using it would not compile: each tag becomes
//! `{% if true %}` / `{% endif %}`, its whitespace-control markers kept, which renders the same.

use std::borrow::Cow;

/// `source` with every `generation` / `endgeneration` tag rewritten (outside `{% raw %}` blocks,
/// expressions and comments); borrowed when there is none.
pub(super) fn generation_tags_as_ifs(source: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let (mut copied, mut at, mut raw) = (0, 0, false);
    while let Some(offset) = source[at..].find('{') {
        let start = at + offset;
        let rest = &source[start..];
        let close = match rest.get(..2) {
            Some("{%") => "%}",
            Some("{{") if !raw => "}}",
            Some("{#") if !raw => "#}",
            _ => {
                at = start + 1;
                continue;
            }
        };
        let Some(inner_len) = rest[2..].find(close) else { break };
        let end = start + 2 + inner_len + 2;
        if close == "%}" {
            let inner = &source[start + 2..end - 2];
            let lead = if inner.starts_with(['-', '+']) { &inner[..1] } else { "" };
            let trail = if inner.len() > lead.len() && inner.ends_with('-') { "-" } else { "" };
            let word = inner[lead.len()..inner.len() - trail.len()].trim();
            match word {
                "endraw" if raw => raw = false,
                "raw" if !raw => raw = true,
                "generation" | "endgeneration" if !raw => {
                    out.push_str(&source[copied..start]);
                    let tag = if word == "generation" { "if true" } else { "endif" };
                    out.push_str(&format!("{{%{lead} {tag} {trail}%}}"));
                    copied = end;
                }
                _ => {}
            }
        }
        at = end;
    }
    if copied == 0 {
        return Cow::Borrowed(source);
    }
    out.push_str(&source[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::generation_tags_as_ifs as rewrite;

    #[test]
    fn generation_tags_become_ifs_with_their_markers_and_nothing_else_changes() {
        assert_eq!(rewrite("a{% generation %}b{% endgeneration %}c"), "a{% if true %}b{% endif %}c");
        assert_eq!(rewrite("{%- generation -%}x{%-endgeneration%}"), "{%- if true -%}x{%- endif %}");
        assert_eq!(rewrite("{%+ generation %}"), "{%+ if true %}");
        for untouched in [
            "{% raw %}{% generation %}{% endraw %}",
            "{{ '{% generation %}' }}",
            "{# {% generation %} #}",
            "{% if generation %}{% endif %}",
            "{% set generation = 1 %}",
            "no tags { at all",
            "{% generation",
        ] {
            assert!(matches!(rewrite(untouched), std::borrow::Cow::Borrowed(_)), "{untouched}");
        }
        assert_eq!(rewrite("{% raw %}{{{% endraw %}{% generation %}"), "{% raw %}{{{% endraw %}{% if true %}");
    }
}
