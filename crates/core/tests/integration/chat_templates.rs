//! Chat templates render exactly what transformers' `apply_chat_template` renders (cases written by
//! test/fixtures/chat-templates/make-chat-templates.py), and hostile templates fail typed, bounded.

use std::path::PathBuf;

use phoenix_core::chat::{ChatMessage, ChatTemplate, MAX_OUTPUT_BYTES, MAX_TEMPLATE_BYTES};
use phoenix_core::ErrorCode;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/chat-templates")
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("cases.json")).unwrap()).unwrap()
}

fn template_named(name: &str, bos: Option<&str>, eos: Option<&str>) -> ChatTemplate {
    let source = std::fs::read_to_string(fixtures().join("templates").join(format!("{name}.jinja"))).unwrap();
    ChatTemplate::new(&source, bos, eos, &format!("{name}.jinja")).unwrap()
}

fn messages(v: &serde_json::Value) -> Vec<ChatMessage> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn real_templates_render_byte_identical_to_transformers() {
    let cases = cases();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "the fixture holds {} cases", cases.len());
    let mut templates = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["template"].as_str().unwrap();
        templates.insert(name.to_string());
        let template = template_named(name, case["bos_token"].as_str(), case["eos_token"].as_str());
        let add = case["add_generation_prompt"].as_bool().unwrap();
        let got = template.render(&messages(&case["messages"]), add).unwrap();
        assert_eq!(
            got,
            case["expected"].as_str().unwrap(),
            "{name}, conversation {}, add_generation_prompt {add}",
            case["conversation"]
        );
    }
    for name in ["smollm2", "llama3", "qwen2", "granite4", "python-features", "assistant-mask"] {
        assert!(templates.contains(name), "no case for {name}");
    }
}

#[test]
fn raise_exception_is_an_invalid_option_with_the_templates_reason() {
    let cases = cases();
    let refused = &cases["refused"];
    let template = template_named(refused["template"].as_str().unwrap(), None, None);
    let e = template.render(&messages(&refused["messages"]), true).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption, "{}", e.message);
    assert!(e.message.contains(refused["error"].as_str().unwrap()), "{}", e.message);
    assert!(e.message.contains("granite4.jinja"), "{}", e.message);
}

#[test]
fn strftime_now_formats_the_current_utc_date() {
    let t =
        ChatTemplate::new("{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %b %Y') }}", None, None, "t").unwrap();
    let before = chrono_free_today();
    let out = t.render(&[ChatMessage::new("user", "x")], false).unwrap();
    let (iso, human) = out.split_once('|').unwrap();
    assert!(iso == before || iso == chrono_free_today(), "{iso} vs {before}");
    assert_eq!(human.len(), 11, "{human}");
    // An invalid format is the template's error, typed, never a panic.
    let bad = ChatTemplate::new("{{ strftime_now('%Q%') }}", None, None, "bad.jinja").unwrap();
    let e = bad.render(&[ChatMessage::new("user", "x")], false).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadConfig, "{}", e.message);
    assert!(e.message.contains("bad.jinja"), "{}", e.message);
}

/// Today's UTC date as YYYY-MM-DD from the system clock, by the civil-from-days algorithm.
fn chrono_free_today() -> String {
    let days = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn render_err(source: &str) -> phoenix_core::PhoenixError {
    match ChatTemplate::new(source, None, None, "hostile.jinja") {
        Err(e) => e,
        Ok(t) => t.render(&[ChatMessage::new("user", "hi")], true).unwrap_err(),
    }
}

#[test]
fn hostile_templates_fail_typed_and_bounded() {
    let cases: [(&str, &str); 8] = [
        // endless work: fuel runs out
        ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "instructions"),
        // unbounded recursion, and a range past minijinja's: the limit is named
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "(recursion limit exceeded)"),
        ("{% for i in range(10**9) %}{% endfor %}", "(range has too many elements)"),
        // output past the cap
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "output"),
        // syntax error
        ("{% for %}", "does not compile"),
        // an unknown function / filter
        ("{{ os.system('true') }}{{ __import__('os') }}", "hostile.jinja"),
        ("{{ messages | nosuchfilter }}", "unknown filter"),
        // Python internals are not reachable
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "hostile.jinja"),
    ];
    for (source, expected) in cases {
        let e = render_err(source);
        assert_eq!(e.code, ErrorCode::BadConfig, "{source}: {}", e.message);
        assert!(e.message.contains(expected), "{source}: {}", e.message);
        assert!(e.message.contains("hostile.jinja"), "{source}: {}", e.message);
    }
    // minijinja panics reverse-slicing an empty list (granite4 with only a system message leaves
    // `loop_messages` empty): a typed error, not a crash.
    let granite = template_named("granite4", None, None);
    let e = granite.render(&[ChatMessage::new("system", "only")], true).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadConfig, "{}", e.message);
    assert!(e.message.contains("granite4.jinja"), "{}", e.message);
    // A source past the size limit is refused before compiling.
    let huge = "x".repeat(2 << 20);
    assert_eq!(render_err(&huge).code, ErrorCode::BadConfig);
    let _ = MAX_OUTPUT_BYTES;
}

#[test]
fn messages_never_appear_in_compile_errors_and_oversized_conversations_are_refused() {
    let t = template_named("smollm2", None, None);
    let too_many = vec![ChatMessage::new("user", "x"); phoenix_core::chat::MAX_MESSAGES + 1];
    let e = t.render(&too_many, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    let too_long = vec![ChatMessage::new("user", "x".repeat(phoenix_core::chat::MAX_MESSAGES_BYTES + 1))];
    assert_eq!(t.render(&too_long, true).unwrap_err().code, ErrorCode::InvalidOption);
    // A compile error names the kind and line, never the template's text.
    let e = ChatTemplate::new("line one\n{% if secret_word_xyz %}", None, None, "t.jinja").unwrap_err();
    assert!(!e.message.contains("secret_word_xyz"), "{}", e.message);
    assert!(e.message.contains("line"), "{}", e.message);
}

/// Seeded mutations of the real templates (pieces of Jinja syntax inserted, characters dropped or
/// swapped): every compile and render returns a typed error or text, never a panic.
/// `PHOENIX_CHAT_FUZZ_ROUNDS` (default 300 per template) runs longer by hand.
#[test]
fn mutated_templates_fail_typed_never_panic() {
    const PIECES: [&str; 16] =
        ["{%", "%}", "{{", "}}", "{#", "#}", "-", "(", ")", "[", "]", "|", "'", "\"", " for x in messages ", "loop."];
    let messages =
        vec![ChatMessage::new("system", "S"), ChatMessage::new("user", "Hi?"), ChatMessage::new("assistant", "A")];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut rendered, mut refused) = (0, 0);
    for name in ["smollm2", "llama3", "qwen2", "granite4", "python-features", "assistant-mask"] {
        let source = std::fs::read_to_string(fixtures().join("templates").join(format!("{name}.jinja"))).unwrap();
        let rounds = std::env::var("PHOENIX_CHAT_FUZZ_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
        for _ in 0..rounds {
            let mut chars: Vec<char> = source.chars().collect();
            for _ in 0..1 + next(3) {
                let at = next(chars.len());
                match next(3) {
                    0 => {
                        chars.remove(at);
                    }
                    1 => chars.splice(at..at, PIECES[next(PIECES.len())].chars()).for_each(drop),
                    _ => {
                        let other = next(chars.len());
                        chars.swap(at, other)
                    }
                }
            }
            let mutated: String = chars.into_iter().collect();
            let outcome = std::panic::catch_unwind(|| {
                ChatTemplate::new(&mutated, Some("<s>"), Some("</s>"), "m.jinja")
                    .and_then(|t| t.render(&messages, true))
            });
            match outcome.unwrap_or_else(|_| panic!("a mutation of {name} panicked:\n{mutated}")) {
                Ok(_) => rendered += 1,
                Err(e) => {
                    assert!(
                        matches!(e.code, ErrorCode::BadConfig | ErrorCode::InvalidOption),
                        "{}: {}",
                        e.code.as_str(),
                        e.message
                    );
                    assert!(e.message.contains("m.jinja"), "{}", e.message);
                    refused += 1;
                }
            }
        }
    }
    assert!(rendered > 0 && refused > 0, "{rendered} rendered, {refused} refused");
}

/// Parsing and code generation recurse once per link of a postfix chain: a 50,000-link filter chain
/// overflowed the stack and killed the process (an overflow cannot be caught). At the longest source
/// allowed, every chain kind compiles, and renders or fails typed; the test thread's own stack is
/// 2 MiB, so a compile on it would overflow here.
#[test]
fn the_longest_postfix_chains_a_template_can_spell_compile_without_overflowing() {
    for link in ["|e", ".a", "[0]", "()", "|string"] {
        let links = (MAX_TEMPLATE_BYTES - 32) / link.len();
        let source = format!("{{{{ messages{} }}}}", link.repeat(links));
        assert!(source.len() <= MAX_TEMPLATE_BYTES);
        match ChatTemplate::new(&source, None, None, "chain") {
            Ok(t) => {
                if let Err(e) = t.render(&[ChatMessage::new("user", "hi")], true) {
                    assert_eq!(e.code, ErrorCode::BadConfig, "{link}: {}", e.message);
                }
            }
            Err(e) => assert_eq!(e.code, ErrorCode::BadConfig, "{link}: {}", e.message),
        }
    }
}
