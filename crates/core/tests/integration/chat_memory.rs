//! A chat template is file content (a GGUF header, tokenizer_config.json): one that builds a huge
//! value in a few instructions (doubling a string or list, a filter that expands) must fail typed,
//! naming the template and the limit, and never abort the process on a failed allocation.
//!
//! Each hostile case runs in a child process of this test binary (a stopped render keeps its memory,
//! up to the budget, and a process keeps only a few of them), under a 4 GiB address-space limit so that
//! an unguarded render aborts on allocation failure instead of exhausting the machine.

use std::process::Command;
use std::time::{Duration, Instant};

use phoenix_core::chat::{ChatMessage, ChatTemplate, MAX_RENDER_MEMORY, MAX_RENDER_MILLIS};
use phoenix_core::ErrorCode;

/// Templates that grow a value past any sane size with few instructions, one per way minijinja,
/// its contrib methods and our filters can grow one.
const CASES: &[(&str, &str)] = &[
    (
        "namespace-concat",
        "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x | length }}",
    ),
    (
        "set-block-capture",
        "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set c %}{{ ns.x }}{{ ns.x }}{% endset %}{% set ns.x = c %}{% endfor %}{{ ns.x | length }}",
    ),
    (
        "list-doubling",
        "{% set ns = namespace(l=['ab']) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | join | length }}",
    ),
    ("string-repetition", "{% set s = 'a' * 100000000 %}{{ (s ~ s ~ s ~ s) | length }}"),
    (
        "list-of-repeated-strings",
        "{% set ns = namespace(l=[]) %}{% for i in range(100) %}{% set ns.l = ns.l + ['a' * (100000000 + i)] %}{% endfor %}{{ ns.l | length }}",
    ),
    ("join-of-a-repeated-list", "{{ ([('x' * 1000000)] * 100000) | join | length }}"),
    ("join-method", "{{ ''.join([('x' * 1000000)] * 100000) | length }}"),
    ("list-filter", "{{ ([1] * 10000000000) | list | length }}"),
    ("replace-filter", "{{ ('a' * 100000) | replace('a', 'b' * 100000) | length }}"),
    ("replace-method", "{{ ('a' * 100000).replace('a', 'b' * 100000) | length }}"),
    ("indent-filter", "{{ ('a\\n' * 1000) | indent(100000000) | length }}"),
    ("format-filter-width", "{{ '%10000000000s' | format('a') | length }}"),
    ("format-method-width", "{{ '{:>10000000000}'.format('a') | length }}"),
    ("tojson-filter", "{{ ([('x' * 1000000)] * 100000) | tojson | length }}"),
    ("printed-list", "{{ [1] * 10000000000 }}"),
    ("string-filter", "{{ ([1] * 10000000000) | string | length }}"),
    (
        "recursive-macro",
        "{% macro d(s, n) %}{% if n > 0 %}{{ d(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ d('a', 60) }}",
    ),
];

const CASE_VAR: &str = "PHOENIX_CHAT_MEMORY_CASE";

#[test]
fn every_value_growing_template_fails_typed_and_the_process_survives() {
    let exe = std::env::current_exe().unwrap();
    for (name, _) in CASES {
        let mut child = Command::new(&exe);
        child
            .args(["--exact", "chat_memory::render_one_hostile_case", "--nocapture", "--test-threads=1"])
            .env(CASE_VAR, name);
        limit_address_space(&mut child);
        let out = child.output().unwrap();
        assert!(
            out.status.success(),
            "{name}: the child ended with {:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "{name}: the case did not run");
    }
}

/// The child's half of the test above (does nothing unless `PHOENIX_CHAT_MEMORY_CASE` names a case).
#[test]
fn render_one_hostile_case() {
    let Ok(name) = std::env::var(CASE_VAR) else { return };
    let (_, source) = CASES.iter().find(|(n, _)| *n == name).expect("a known case");
    let origin = format!("{name}.gguf (tokenizer.chat_template)");
    let template = ChatTemplate::new(source, None, None, &origin).unwrap();
    let conversation = [ChatMessage::new("user", "hi")];

    let e = template.render(&conversation, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadConfig, "{name}: {}", e.message);
    assert!(e.message.contains(&origin), "{name}: {}", e.message);
    // The memory budget, or the time limit for a case that grows its value slowly (`printed-list`
    // writes a huge list element by element, into an output that is cut off).
    let over_memory = e.message.contains(&format!("{} MiB", MAX_RENDER_MEMORY >> 20));
    let over_time = e.message.contains(&format!("the {} s a render may take", MAX_RENDER_MILLIS / 1000));
    assert!(over_memory || over_time, "{name}: {}", e.message);
    assert!(!e.message.contains("{%") && !e.message.contains("{{"), "{name} quotes the template: {}", e.message);

    // The template is marked: rendering it again fails at once with the same error.
    let started = Instant::now();
    let again = template.render(&conversation, true).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50), "{name}: rendered again ({:?})", started.elapsed());
    assert_eq!((again.code, &again.message), (e.code, &e.message));

    // Other templates still render in this process.
    let fine =
        ChatTemplate::new("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", None, None, "ok")
            .unwrap();
    assert_eq!(fine.render(&conversation, false).unwrap(), "user: hi\n");
}

/// Fuel counts instructions, not their cost: a loop of `replace` over a 1 MiB string stays far under
/// the fuel and the memory budget yet would run for an hour. It is stopped at the render's time limit
/// (its thread stops at its next allocation, which `replace` makes at once), and refused from then on.
#[test]
fn a_template_whose_instructions_are_slow_is_stopped_at_the_time_limit() {
    let source = "{% set s = 'a' * 1000000 %}{% set ns = namespace(n=0) %}{% for i in range(100000) %}{% set ns.n = ns.n + (s.replace('a', 'bb') | length) %}{% endfor %}{{ ns.n }}";
    let template = ChatTemplate::new(source, None, None, "slow.jinja").unwrap();
    let conversation = [ChatMessage::new("user", "hi")];
    let started = Instant::now();
    let e = template.render(&conversation, true).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code, ErrorCode::BadConfig, "{}", e.message);
    let limit = Duration::from_millis(MAX_RENDER_MILLIS);
    assert!(e.message.contains("slow.jinja") && e.message.contains(&format!("{} s", limit.as_secs())), "{}", e.message);
    assert!(took >= limit && took < limit + Duration::from_secs(2), "stopped after {took:?}");
    let started = Instant::now();
    let again = template.render(&conversation, true).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(again.message, e.message);
}

/// A real conversation near the message limits renders: the budget leaves room for what a template
/// legitimately builds (copies of the messages, the output).
#[test]
fn a_large_legitimate_conversation_renders_within_the_budget() {
    let template = ChatTemplate::new(
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{{ (m.content ~ m.content) | length }}\n{% endfor %}{{ messages | tojson | length }}",
        None,
        None,
        "big.jinja",
    )
    .unwrap();
    let body = "word ".repeat(200_000); // 1 MB each
    let conversation: Vec<_> =
        (0..6).map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, body.clone())).collect();
    let text = template.render(&conversation, true).unwrap();
    assert!(text.len() > 6_000_000, "{}", text.len());
}

#[cfg(unix)]
fn limit_address_space(child: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        child.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 4 << 30, rlim_max: 4 << 30 };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn limit_address_space(_child: &mut Command) {}

/// What the counting allocator costs outside a render (not run by default; prints ns per
/// allocate+free pair through the global allocator and through `System` directly):
/// `cargo test --release -p phoenix-core --test integration -- chat_memory:: --ignored --nocapture`.
#[test]
#[ignore]
fn allocator_fast_path_cost() {
    use std::alloc::{GlobalAlloc, Layout, System};
    let layout = Layout::from_size_align(64, 8).unwrap();
    let pairs = 20_000_000u32;
    let time = |f: &dyn Fn()| {
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..pairs {
                    f();
                }
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        best * 1e9 / f64::from(pairs)
    };
    // SAFETY: each block is freed with the layout it was allocated with.
    let global = time(&|| unsafe { std::alloc::dealloc(std::hint::black_box(std::alloc::alloc(layout)), layout) });
    let system = time(&|| unsafe { System.dealloc(std::hint::black_box(System.alloc(layout)), layout) });
    println!("allocate+free 64 B: global {global:.2} ns, System {system:.2} ns");
}
