//! Bounds for the pickle in a PyTorch checkpoint, checked before candle's `pickle::Stack` decodes it.
//!
//! candle's reader builds a tree of owned `Object`s: the memo opcodes (`BINPUT`/`BINGET`) clone whole
//! subtrees, so a few hundred bytes can describe an exponentially large tree, and nesting is unbounded,
//! so a deep tree overflows the thread's stack when it is cloned or dropped. This module replays the
//! opcode stream on a shadow stack that keeps, per object, only its kind, its node count, its string
//! bytes and its nesting depth — the same operations candle performs (opcode table: CPython's
//! `pickletools`), at a cost linear in the pickle — and refuses the pickle before candle would build
//! anything too deep or too large, or fail on it (candle's own messages may quote the objects it
//! rejects). Only the opcodes candle understands are accepted.

use std::collections::HashMap;

/// Largest `data.pkl` accepted. Real state dicts are a few hundred bytes per tensor.
pub(super) const MAX_PICKLE_BYTES: usize = 64 << 20;
/// Deepest object nesting. A state dict nests about 8 levels (dict → rebuild call → args → storage id);
/// the bound keeps candle's recursive clone / drop / compare far from any thread's stack limit.
pub(super) const MAX_DEPTH: u32 = 100;
/// Most objects candle may create in total, counting every clone the memo makes.
pub(super) const MAX_NODES: u64 = 4_000_000;
/// Most string bytes candle may create in total, counting every clone the memo makes.
pub(super) const MAX_STRING_BYTES: u64 = 64 << 20;
/// Most memo entries.
pub(super) const MAX_MEMO: usize = 1 << 20;

/// What the opcodes that check a type need to know about an object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mark,
    List,
    Dict,
    /// A global; `dict_factory` when candle's `REDUCE` turns calling it into an empty dict.
    Class {
        dict_factory: bool,
    },
    Other,
}

/// The shadow of one object candle would hold.
#[derive(Clone, Copy)]
struct Shadow {
    kind: Kind,
    /// `Object` nodes in the tree.
    nodes: u64,
    /// Bytes of all strings in the tree.
    string_bytes: u64,
    /// Nesting depth (a leaf is 1).
    depth: u32,
}

impl Shadow {
    fn leaf(kind: Kind) -> Self {
        Shadow { kind, nodes: 1, string_bytes: 0, depth: 1 }
    }

    /// A new node holding `children`.
    fn parent(kind: Kind, children: &[Shadow]) -> Self {
        let mut s = Shadow::leaf(kind);
        for c in children {
            s.adopt(c);
        }
        s
    }

    /// `child` moved into `self` (no new objects: candle moves it).
    fn adopt(&mut self, child: &Shadow) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.string_bytes = self.string_bytes.saturating_add(child.string_bytes);
        self.depth = self.depth.max(child.depth.saturating_add(1));
    }
}

/// Replays the opcodes; `Err` says what is wrong (never quoting the data), with the byte position.
pub(super) fn check(pickle: &[u8]) -> std::result::Result<(), String> {
    if pickle.len() > MAX_PICKLE_BYTES {
        return Err(format!("pickle of {} bytes exceeds the {MAX_PICKLE_BYTES}-byte limit", pickle.len()));
    }
    let mut scan = Scan { data: pickle, pos: 0, stack: Vec::new(), memo: HashMap::new(), nodes: 0, string_bytes: 0 };
    loop {
        let at = scan.pos;
        match scan.step() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(problem) => return Err(format!("pickle opcode at byte {at}: {problem}")),
        }
    }
}

struct Scan<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Shadow>,
    memo: HashMap<u32, Shadow>,
    /// Objects and string bytes created so far (the work candle will do).
    nodes: u64,
    string_bytes: u64,
}

type Step<T> = std::result::Result<T, String>;

impl<'a> Scan<'a> {
    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("pickle ends inside an opcode")?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Step<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Counts what candle creates for `s` (a new object or a clone) against the totals.
    fn create(&mut self, s: Shadow) -> Step<Shadow> {
        self.nodes = self.nodes.saturating_add(s.nodes);
        self.string_bytes = self.string_bytes.saturating_add(s.string_bytes);
        if self.nodes > MAX_NODES {
            return Err(format!("builds more than {MAX_NODES} objects (memo copies included)"));
        }
        if self.string_bytes > MAX_STRING_BYTES {
            return Err(format!("builds more than {MAX_STRING_BYTES} bytes of strings (memo copies included)"));
        }
        if s.depth > MAX_DEPTH {
            return Err(format!("nests objects more than {MAX_DEPTH} levels deep"));
        }
        Ok(s)
    }

    fn push_new(&mut self, s: Shadow) -> Step<()> {
        let s = self.create(s)?;
        self.stack.push(s);
        Ok(())
    }

    fn pop(&mut self) -> Step<Shadow> {
        self.stack.pop().ok_or_else(|| "pops from an empty stack".to_string())
    }

    fn pop_to_mark(&mut self) -> Step<Vec<Shadow>> {
        let mark = self.stack.iter().rposition(|s| s.kind == Kind::Mark).ok_or("no MARK to pop to")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    /// Moves `children` into the object on top of the stack, which must be of kind `want`.
    fn extend_top(&mut self, want: Kind, children: &[Shadow]) -> Step<()> {
        let top = self.stack.last_mut().ok_or("adds to an empty stack")?;
        if top.kind != want {
            return Err(format!(
                "adds items to an object that is not a {}",
                if want == Kind::List { "list" } else { "dict" }
            ));
        }
        for c in children {
            top.adopt(c);
        }
        if top.depth > MAX_DEPTH {
            return Err(format!("nests objects more than {MAX_DEPTH} levels deep"));
        }
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Step<()> {
        let s = *self.memo.get(&id).ok_or("fetches a memo entry that was never stored")?;
        self.push_new(s)
    }

    fn memo_put(&mut self, id: u32) -> Step<()> {
        let top = *self.stack.last().ok_or("memoizes from an empty stack")?;
        let copy = self.create(top)?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&id) {
            return Err(format!("stores more than {MAX_MEMO} memo entries"));
        }
        self.memo.insert(id, copy);
        Ok(())
    }

    /// One opcode, as candle's `Stack::read` executes it; `Ok(true)` at STOP.
    fn step(&mut self) -> Step<bool> {
        let op = self.u8().map_err(|_| "pickle ends without STOP".to_string())?;
        match op {
            0x80 => drop(self.u8()?), // PROTO
            b'c' => {
                // GLOBAL: module and name, each up to a newline (candle also takes a final unterminated line).
                let module = self.line();
                let name = self.line();
                let dict_factory = module == b"collections" && (name == b"OrderedDict" || name == b"defaultdict");
                let mut s = Shadow::leaf(Kind::Class { dict_factory });
                s.string_bytes = (module.len() + name.len()) as u64;
                self.push_new(s)?;
            }
            b'K' | b'M' | b'J' | b'G' => {
                let width = match op {
                    b'K' => 1,
                    b'M' => 2,
                    b'J' => 4,
                    _ => 8,
                };
                self.take(width)?;
                self.push_new(Shadow::leaf(Kind::Other))?;
            }
            0x8a => {
                // LONG1: candle decodes at most 8 bytes into an i64 (more would overflow its shifts).
                let n = self.u8()? as usize;
                if n > 8 {
                    return Err(format!("LONG1 of {n} bytes does not fit 64 bits"));
                }
                self.take(n)?;
                self.push_new(Shadow::leaf(Kind::Other))?;
            }
            b'X' => {
                let len = self.u32()? as usize;
                let text = self.take(len).map_err(|_| format!("string of {len} bytes runs past the end"))?;
                std::str::from_utf8(text).map_err(|_| "string is not UTF-8".to_string())?;
                let mut s = Shadow::leaf(Kind::Other);
                s.string_bytes = len as u64;
                self.push_new(s)?;
            }
            b'N' | 0x88 | 0x89 | b')' => self.push_new(Shadow::leaf(Kind::Other))?,
            // candle reads `d` (DICT) as EMPTY_DICT.
            b'}' | b'd' => self.push_new(Shadow::leaf(Kind::Dict))?,
            b']' => self.push_new(Shadow::leaf(Kind::List))?,
            b'(' => self.push_new(Shadow::leaf(Kind::Mark))?,
            b'Q' => {
                let id = self.pop()?;
                self.push_new(Shadow::parent(Kind::Other, &[id]))?;
            }
            b't' => {
                let items = self.pop_to_mark()?;
                self.push_new(Shadow::parent(Kind::Other, &items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err("pops from an empty stack".to_string());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_new(Shadow::parent(Kind::Other, &items))?;
            }
            b'a' => {
                let value = self.pop()?;
                self.extend_top(Kind::List, &[value])?;
            }
            b'e' => {
                let items = self.pop_to_mark()?;
                self.extend_top(Kind::List, &items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.extend_top(Kind::Dict, &[key, value])?;
            }
            b'u' => {
                let items = self.pop_to_mark()?;
                if items.len() % 2 != 0 {
                    return Err("SETITEMS with an odd number of items".to_string());
                }
                self.extend_top(Kind::Dict, &items)?;
            }
            b'b' => {
                // BUILD: two dicts merge (the state dict's entries plus its attributes); else a Build node.
                let args = self.pop()?;
                let obj = self.pop()?;
                if obj.kind == Kind::Dict && args.kind == Kind::Dict {
                    let mut merged = obj;
                    merged.adopt(&args);
                    merged.nodes = merged.nodes.saturating_sub(1); // the args' own dict node is dropped
                    merged.depth = obj.depth.max(args.depth);
                    self.stack.push(merged);
                } else {
                    self.push_new(Shadow::parent(Kind::Other, &[obj, args]))?;
                }
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ; candle's REDUCE of OrderedDict / defaultdict gives an empty dict.
                let args = self.pop()?;
                let callable = self.pop()?;
                if op == b'R' && callable.kind == (Kind::Class { dict_factory: true }) {
                    self.push_new(Shadow::leaf(Kind::Dict))?;
                } else {
                    self.push_new(Shadow::parent(Kind::Other, &[callable, args]))?;
                }
            }
            b'h' => {
                let id = self.u8()? as u32;
                self.memo_get(id)?;
            }
            b'j' => {
                let id = self.u32()?;
                self.memo_get(id)?;
            }
            b'q' => {
                let id = self.u8()? as u32;
                self.memo_put(id)?;
            }
            b'r' => {
                let id = self.u32()?;
                self.memo_put(id)?;
            }
            b'.' => {
                // candle's `finalize` pops the result.
                if self.stack.is_empty() {
                    return Err("STOP with an empty stack".to_string());
                }
                return Ok(true);
            }
            other => return Err(format!("unsupported opcode 0x{other:02x}")),
        }
        Ok(false)
    }

    /// Bytes up to the next newline (consumed), or to the end; a final `\r` dropped, as candle does.
    fn line(&mut self) -> &'a [u8] {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        let (line, used) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], i + 1),
            // candle drops the last byte of an unterminated line.
            None => (&rest[..rest.len().saturating_sub(1)], rest.len()),
        };
        self.pos += used;
        line.strip_suffix(b"\r").unwrap_or(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_small_state_dict_shape() {
        // {"a": [1, 2]} via EMPTY_DICT, MARK, BINUNICODE, EMPTY_LIST, BININT1 ×2, APPENDS, SETITEMS, STOP.
        let p = b"\x80\x02}(X\x01\x00\x00\x00a](K\x01K\x02eu.";
        assert_eq!(check(p), Ok(()));
    }

    #[test]
    fn refuses_deep_nesting() {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 200));
        p.extend(std::iter::repeat_n(b'a', 199));
        p.push(b'.');
        assert!(check(&p).unwrap_err().contains("levels deep"));
    }

    #[test]
    fn refuses_memo_doubling() {
        // A list memoized, fetched twice into a pair, the pair memoized again: doubles per 7 bytes.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..64 {
            p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        p.push(b'.');
        let e = check(&p).unwrap_err();
        assert!(e.contains("objects") || e.contains("levels deep"), "{e}");
    }

    /// The fixture checkpoint's pickle (a real torch.save state dict).
    fn real_pickle() -> Vec<u8> {
        use std::io::Read;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test/fixtures/mamba1-tiny-original/pytorch_model.bin");
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(std::fs::read(path).unwrap())).unwrap();
        let mut pickle = Vec::new();
        zip.by_name("pytorch_model/data.pkl").unwrap().read_to_end(&mut pickle).unwrap();
        pickle
    }

    /// Whether candle decodes `pickle`; what it decodes goes through `pth_tensor` (which must not panic).
    fn candle_decodes(pickle: &[u8]) -> bool {
        let mut stack = candle_core::pickle::Stack::empty();
        let Ok(object) = stack.read_loop(&mut &pickle[..]).and_then(|()| stack.finalize()) else { return false };
        if let candle_core::pickle::Object::Dict(entries) = &object {
            for (_, value) in entries {
                let _ = super::super::pth_tensor::tensor_view(value);
            }
        }
        true
    }

    #[test]
    fn accepts_exactly_what_candle_decodes_below_the_bounds() {
        // The replay mirrors candle's reader: on the real pickle and on thousands of damaged copies
        // (bytes overwritten, truncated), the guard accepts exactly what candle decodes.
        let real = real_pickle();
        assert_eq!(check(&real), Ok(()));
        assert!(candle_decodes(&real));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..10_000 {
            let mut p = real.clone();
            for _ in 0..1 + round % 3 {
                let at = next() as usize % p.len();
                p[at] = next() as u8;
            }
            if round % 5 == 0 {
                p.truncate(next() as usize % p.len());
            }
            // Far below every bound, so the two agree both ways (nothing readable is refused), except
            // that a LONG1 wider than 8 bytes, which candle wraps into a wrong number, is refused.
            let verdict = check(&p);
            let ok = verdict.is_ok();
            let deliberate = verdict.as_ref().is_err_and(|e| e.contains("does not fit 64 bits"));
            assert!(ok == candle_decodes(&p) || deliberate, "round {round}: guard {verdict:?}; candle disagrees");
            if ok {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 500 && refused > 500, "accepted {accepted}, refused {refused}");
    }

    #[test]
    fn refuses_truncation_bad_lengths_and_kinds() {
        assert!(check(b"\x80\x02X\xff\xff\xff\xff").unwrap_err().contains("past the end"));
        assert!(check(b"\x80\x02\x8a\x09").unwrap_err().contains("64 bits"));
        assert!(check(b"\x80\x02}K\x01a.").unwrap_err().contains("not a list"));
        assert!(check(b"\x80\x02h\x00.").unwrap_err().contains("never stored"));
        assert!(check(b"\x80\x02").unwrap_err().contains("without STOP"));
        assert!(check(b"\x80\x02J\x01").unwrap_err().contains("ends inside"));
    }
}
