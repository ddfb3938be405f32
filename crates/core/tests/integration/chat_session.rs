//! Chat on a loaded model: the template found in the folder's files, the rendered prompt, and a
//! generation that stops at the template's end-of-turn token without returning its text.

use std::path::PathBuf;
use std::sync::Arc;

use phoenix_core::chat::ChatMessage;
use phoenix_core::generate::{FinishReason, RawGenerateOptions};
use phoenix_core::loader::ModelFiles;
use phoenix_core::session::{LoadedModel, Prompt};
use phoenix_core::ErrorCode;

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn llama_tiny_files() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/llama-tiny");
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

/// llama-tiny's files with `extra` added and `tokenizer.json` replaced when given.
fn load(extra: &[(&str, String)], tokenizer: Option<String>) -> Arc<LoadedModel> {
    let mut files = llama_tiny_files();
    if let Some(t) = tokenizer {
        files.retain(|(n, _)| n != "tokenizer.json");
        files.push(("tokenizer.json".into(), t.into_bytes()));
    }
    files.extend(extra.iter().map(|(n, s)| (n.to_string(), s.clone().into_bytes())));
    Arc::new(LoadedModel::from_files(&ModelFiles::from_memory_named(Some("models/chat".into()), files)).unwrap())
}

fn tokenizer_config(template: &str) -> (&'static str, String) {
    let json =
        serde_json::json!({ "chat_template": template, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>" });
    ("tokenizer_config.json", json.to_string())
}

/// `model.safetensors` of llama-tiny with row `to` of the LM head replaced by row `from`: the two
/// ids then get equal logits everywhere, and greedy picks the lower one (the first maximum).
fn lm_head_row_copied(files: &mut [(String, Vec<u8>)], from: usize, to: usize) {
    let (_, bytes) = files.iter_mut().find(|(n, _)| n == "model.safetensors").unwrap();
    let (header_len, metadata) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let info = metadata.info("lm_head.weight").unwrap();
    let hidden = info.shape[1];
    let base = 8 + header_len + info.data_offsets.0;
    let row = |id: usize| base + id * hidden * 4..base + (id + 1) * hidden * 4;
    let copied = bytes[row(from)].to_vec();
    bytes[row(to)].copy_from_slice(&copied);
}

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

fn run(generation: &mut phoenix_core::session::Generation) -> (Vec<u32>, String, FinishReason) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    while let Some(step) = generation.next_step().unwrap() {
        ids.extend(step.token_id);
        text.push_str(&step.text);
        if let Some(reason) = step.finish_reason {
            return (ids, text, reason);
        }
    }
    unreachable!("a generation ends with a finish reason")
}

#[test]
fn the_folders_template_renders_the_prompt_and_its_turn_end_stops() {
    let model = load(&[tokenizer_config(CHATML)], None);
    assert!(model.info().has_chat_template);
    let prompt = model.chat_prompt(&user("Hi"), true).unwrap();
    assert_eq!(prompt.text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    // No `<|im_end|>` token in this tokenizer: the turn ends at EOS (id 0) only.
    assert_eq!(prompt.stop_token_ids, vec![0]);
    // The generation's prompt is the rendered text, tokenized without an added BOS.
    let options = RawGenerateOptions { max_tokens: Some(5.0), ..Default::default() };
    let mut chat = model.generate_chat_raw(&user("Hi"), &options, None).unwrap();
    run(&mut chat);
    let expected = model.tokenize(&prompt.text, false).unwrap();
    assert_eq!(&chat.token_ids()[..expected.len()], &expected[..]);
    assert_eq!(chat.stats().prompt_tokens, expected.len());
}

#[test]
fn generation_stops_at_an_end_of_turn_token_that_is_not_eos_and_hides_it() {
    // A template that ends turns with `<|padding|>` (id 1, a special token; EOS is 0).
    let template = CHATML.replace("<|im_end|>", "<|padding|>");
    let options = RawGenerateOptions { max_tokens: Some(24.0), ..Default::default() };
    let model = load(&[tokenizer_config(&template)], None);
    let prompt = model.chat_prompt(&user("Hi"), true).unwrap();
    assert_eq!(prompt.stop_token_ids, vec![1, 0], "the end-of-turn token, then EOS");
    // The reply without chat's stops: pick a token it produces (not at the start) ...
    let plain = RawGenerateOptions { add_special_tokens: Some(false), ..options.clone() };
    let mut free = model.generate_raw(Prompt::Text(prompt.text.clone()), &plain, None).unwrap();
    let (free_ids, _, _) = run(&mut free);
    let at = (2..free_ids.len()).find(|&i| free_ids[i] > 1 && !free_ids[..i].contains(&free_ids[i])).unwrap();
    // ... and give id 1 its LM-head row: greedy now says `<|padding|>` exactly there.
    let mut files = llama_tiny_files();
    lm_head_row_copied(&mut files, free_ids[at] as usize, 1);
    let (name, body) = tokenizer_config(&template);
    files.push((name.to_string(), body.into_bytes()));
    let model = Arc::new(LoadedModel::from_files(&ModelFiles::from_memory(files)).unwrap());
    let mut chat = model.generate_chat_raw(&user("Hi"), &options, None).unwrap();
    let (ids, text, reason) = run(&mut chat);
    assert_eq!(reason, FinishReason::Stop);
    let mut expected = free_ids[..at].to_vec();
    expected.push(1);
    assert_eq!(ids, expected, "stops right at <|padding|>");
    assert_eq!(text, model.detokenize(&free_ids[..at], true).unwrap());
    // Plain generation on the same model does not stop there: the stop is chat's.
    let mut free = model.generate_raw(Prompt::Text(prompt.text), &plain, None).unwrap();
    let (ids, _, _) = run(&mut free);
    assert!(ids.len() > at + 1 && ids[at] == 1, "{ids:?}");
}

#[test]
fn template_sources_list_form_jinja_file_and_their_errors() {
    // The list form: `default` is used.
    let list = serde_json::json!({ "chat_template": [
        { "name": "tool_use", "template": "TOOLS" },
        { "name": "default", "template": "DEFAULT{{ messages[0].content }}" }
    ] });
    let model = load(&[("tokenizer_config.json", list.to_string())], None);
    assert_eq!(model.chat_prompt(&user("x"), true).unwrap().text, "DEFAULTx");
    // chat_template.jinja wins over tokenizer_config.json, and gets its bos_token.
    let model = load(
        &[tokenizer_config(CHATML), ("chat_template.jinja", "J{{ bos_token }}{{ messages|length }}".into())],
        None,
    );
    assert_eq!(model.chat_prompt(&user("x"), true).unwrap().text, "J<|endoftext|>1");
    // No template: plain generation works, chat is a typed error saying so.
    let model = load(&[], None);
    assert!(!model.info().has_chat_template);
    let e = model.chat_prompt(&user("x"), true).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    assert!(e.message.contains("no chat template"), "{}", e.message);
    let e = model.generate_chat_raw(&user("x"), &RawGenerateOptions::default(), None).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOption);
    // A broken template or tokenizer_config.json: the model still loads and generates; chat says
    // which file is wrong.
    for (file, body) in [
        ("tokenizer_config.json", "{not json".to_string()),
        ("tokenizer_config.json", serde_json::json!({ "chat_template": 5 }).to_string()),
        (
            "tokenizer_config.json",
            serde_json::json!({ "chat_template": [{ "name": "other", "template": "x" }] }).to_string(),
        ),
        ("chat_template.jinja", "{% for %}".to_string()),
        // Past the read caps: still the configuration's code, not the weights'.
        ("chat_template.jinja", "x".repeat(phoenix_core::chat::MAX_TEMPLATE_BYTES + 1)),
        ("tokenizer_config.json", format!("{{\"a\": \"{}\"}}", "x".repeat(phoenix_core::loader::files::JSON_FILE_CAP))),
    ] {
        let model = load(&[(file, body.clone())], None);
        let mut g = model
            .generate_raw(
                Prompt::Text("Once".into()),
                &RawGenerateOptions { max_tokens: Some(2.0), ..Default::default() },
                None,
            )
            .unwrap();
        run(&mut g);
        let e = model.chat_prompt(&user("x"), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadConfig, "{}: {}", &body[..body.len().min(40)], e.message);
        assert!(e.message.contains(&format!("models/chat/{file}")), "{}: {}", &body[..body.len().min(40)], e.message);
        assert!(!model.info().has_chat_template);
    }
    // An empty conversation is refused.
    let model = load(&[tokenizer_config(CHATML)], None);
    assert_eq!(model.chat_prompt(&[], true).unwrap_err().code, ErrorCode::InvalidOption);
}

#[test]
fn a_template_from_elsewhere_attaches_to_a_loaded_model() {
    // What the GGUF loader does with `tokenizer.chat_template`: ChatTemplate::new over the source.
    use phoenix_core::chat::ChatTemplate;
    let files = ModelFiles::from_memory(llama_tiny_files());
    let template = CHATML.replace("<|im_end|>", "<|padding|>");
    let attached = LoadedModel::from_files(&files)
        .unwrap()
        .with_chat_template(ChatTemplate::new(&template, None, None, "m.gguf: tokenizer.chat_template").map(Some));
    assert!(attached.info().has_chat_template);
    let prompt = attached.chat_prompt(&user("Hi"), true).unwrap();
    assert_eq!(prompt.text, "<|im_start|>user\nHi<|padding|>\n<|im_start|>assistant\n");
    assert_eq!(prompt.stop_token_ids, vec![1, 0]);
    // A source that does not compile: the model loads, chat names the source.
    let broken = LoadedModel::from_files(&files)
        .unwrap()
        .with_chat_template(ChatTemplate::new("{% if %}", None, None, "m.gguf: tokenizer.chat_template").map(Some));
    let e = broken.chat_prompt(&user("Hi"), true).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadConfig);
    assert!(e.message.contains("m.gguf: tokenizer.chat_template"), "{}", e.message);
}

fn conversation(question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello there"),
        ChatMessage::new("user", question),
    ]
}

/// A snapshot of `ids` fed (the last one pending), as a generation exports it before its first step.
fn state_after(model: &Arc<LoadedModel>, ids: &[u32]) -> Vec<u8> {
    let options = RawGenerateOptions { max_tokens: Some(1.0), ..Default::default() };
    model.generate_raw(Prompt::Ids(ids.to_vec()), &options, None).unwrap().export_state().unwrap()
}

#[test]
fn a_chat_given_an_earlier_turns_state_feeds_only_the_rest_of_the_conversation() {
    let model = load(&[tokenizer_config(CHATML)], None);
    let options = RawGenerateOptions { max_tokens: Some(6.0), ..Default::default() };
    let messages = conversation("How are you?");
    let whole = model.tokenize(&model.chat_prompt(&messages, true).unwrap().text, false).unwrap();
    // The state of the first turns, as the previous reply left it: the conversation up to its answer.
    let first_turns = model.tokenize(&model.chat_prompt(&messages[..2], false).unwrap().text, false).unwrap();
    assert!(whole.starts_with(&first_turns) && whole.len() > first_turns.len() + 3);
    let state = state_after(&model, &first_turns);

    let mut chat = model.generate_chat_raw(&messages, &options, Some(&state)).unwrap();
    let (ids, text, _) = run(&mut chat);
    let stats = chat.stats();
    assert_eq!(stats.restored_tokens, first_turns.len());
    assert_eq!(stats.prompt_tokens, whole.len() - first_turns.len(), "only the new turn is fed");
    assert_eq!(chat.token_ids()[..whole.len()], whole[..], "the context is the whole conversation");
    // The same run as continuing the state with the rest of the conversation's ids.
    let mut chat_stops = options.clone();
    chat_stops.stop_token_ids =
        Some(model.chat_prompt(&messages, true).unwrap().stop_token_ids.iter().map(|&i| i as f64).collect());
    let mut continued =
        model.generate_raw(Prompt::Ids(whole[first_turns.len()..].to_vec()), &chat_stops, Some(&state)).unwrap();
    let (want_ids, want_text, _) = run(&mut continued);
    assert_eq!((ids, text), (want_ids, want_text));
}

/// mamba1-tiny (an SSM: its state cannot forget tokens) with the ChatML template.
fn ssm_with_template() -> Arc<LoadedModel> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/mamba1-tiny");
    let mut files: Vec<(String, Vec<u8>)> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
        .collect();
    let (name, body) = tokenizer_config(CHATML);
    files.push((name.to_string(), body.into_bytes()));
    Arc::new(LoadedModel::from_files(&ModelFiles::from_memory(files)).unwrap())
}

#[test]
fn a_chat_whose_conversation_does_not_continue_the_state_starts_afresh() {
    let options = RawGenerateOptions { max_tokens: Some(6.0), ..Default::default() };
    let messages = conversation("How are you?");
    // An SSM state of another conversation (an earlier message edited since), sharing its start or
    // not: a recurrent state cannot go back to the shared start. A KV cache sharing no token.
    let ssm = ssm_with_template();
    let kv = load(&[tokenizer_config(CHATML)], None);
    let cases = [
        (&ssm, ssm.tokenize(&ssm.chat_prompt(&user("Bye"), false).unwrap().text, false).unwrap()),
        (&ssm, ssm.tokenize("<|im_start|>user\nHo", false).unwrap()),
        (&ssm, ssm.tokenize("Hello", false).unwrap()),
        (&kv, kv.tokenize("Hello", false).unwrap()),
    ];
    for (model, prefix) in cases {
        let mut fresh = model.generate_chat_raw(&messages, &options, None).unwrap();
        let want = run(&mut fresh);
        let mut chat = model.generate_chat_raw(&messages, &options, Some(&state_after(model, &prefix))).unwrap();
        assert_eq!(run(&mut chat), want, "the whole conversation, as without a state");
        assert_eq!(chat.stats().restored_tokens, 0);
        assert_eq!(chat.stats().prompt_tokens, fresh.stats().prompt_tokens);
        assert_eq!(chat.token_ids(), fresh.token_ids());
    }
}

#[test]
fn a_kv_cache_state_whose_tokens_part_from_the_conversation_keeps_the_start_they_share() {
    // The state holds the conversation up to its last answer, then tokens the conversation does not
    // have (an answer edited since, or one whose text tokenizes otherwise than it was generated).
    let model = load(&[tokenizer_config(CHATML)], None);
    let options = RawGenerateOptions { max_tokens: Some(6.0), ..Default::default() };
    let messages = conversation("How are you?");
    let whole = model.tokenize(&model.chat_prompt(&messages, true).unwrap().text, false).unwrap();
    let shared = model.tokenize(&model.chat_prompt(&messages[..1], false).unwrap().text, false).unwrap();
    let other_answer = model.tokenize("<|im_start|>assistant\nGoodbye now<|im_end|>\n", false).unwrap();
    let parted = [shared.clone(), other_answer].concat();
    assert!(whole.starts_with(&shared) && !whole.starts_with(&parted));
    let mut chat = model.generate_chat_raw(&messages, &options, Some(&state_after(&model, &parted))).unwrap();
    let (ids, text, _) = run(&mut chat);
    let keep = whole.iter().zip(&parted).take_while(|(a, b)| a == b).count();
    assert!(keep >= shared.len());
    assert_eq!(chat.stats().restored_tokens, keep, "the tokens both share stay in the cache");
    assert_eq!(chat.stats().prompt_tokens, whole.len() - keep);
    assert_eq!(chat.token_ids()[..whole.len()], whole[..]);
    // As continuing a state that read exactly those tokens: the cut-back cache is that state's.
    let mut chat_stops = options.clone();
    let stops = model.chat_prompt(&messages, true).unwrap().stop_token_ids;
    chat_stops.stop_token_ids = Some(stops.iter().map(|&i| i as f64).collect());
    let state = state_after(&model, &whole[..keep + 1]);
    let mut continued = model.generate_raw(Prompt::Ids(whole[keep + 1..].to_vec()), &chat_stops, Some(&state)).unwrap();
    assert_eq!((ids, text), {
        let (i, t, _) = run(&mut continued);
        (i, t)
    });
}
