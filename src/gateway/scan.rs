//! Finds the answers in an HTTP answer body as it streams from the node to
//! the client, so that the body is never buffered whole (an eth_getLogs
//! answer can be hundreds of MiB) and each answer is billed as it passes.
//!
//! The node is trusted to send valid JSON; the scanner only tracks nesting
//! and strings, and keeps the raw text of each answer's `id` (bounded).

use serde_json::Value;

/// Longer ids are not kept: such an answer is matched as one without id.
const MAX_ID: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Top {
    /// Nothing but whitespace seen yet.
    Unknown,
    /// One answer object: answers sit at depth 1.
    Single,
    /// An array of answers: answers sit at depth 2.
    Batch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// After `{` or `,` in an answer: a key comes next.
    ExpectKey,
    InKey,
    AfterKey,
    /// In a member's value; `true` when the member is `id`.
    Value(bool),
}

#[derive(Debug)]
pub struct Scanner {
    top: Top,
    depth: u32,
    in_str: bool,
    escaped: bool,
    /// Inside an answer object (at the answer depth or deeper).
    answer: Option<State>,
    key: Vec<u8>,
    id: Vec<u8>,
    id_seen: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            top: Top::Unknown,
            depth: 0,
            in_str: false,
            escaped: false,
            answer: None,
            key: Vec::with_capacity(3),
            id: Vec::new(),
            id_seen: false,
        }
    }
}

impl Scanner {
    fn answer_depth(&self) -> u32 {
        match self.top {
            Top::Batch => 2,
            _ => 1,
        }
    }

    fn capturing(&self) -> bool {
        self.answer == Some(State::Value(true))
    }

    fn capture(&mut self, b: u8) {
        if self.capturing() && self.id.len() <= MAX_ID {
            self.id.push(b);
        }
    }

    /// Reads one more piece of the body; calls `answered` with the id of each
    /// answer object that ends in it (`None` when it had no readable id).
    pub fn feed(&mut self, chunk: &[u8], mut answered: impl FnMut(Option<Value>)) {
        for &b in chunk {
            if self.in_str {
                self.capture(b);
                if self.answer == Some(State::InKey) && b != b'"' && self.key.len() < 3 {
                    self.key.push(b);
                }
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_str = false;
                    if self.answer == Some(State::InKey) {
                        self.answer = Some(State::AfterKey);
                    }
                }
                continue;
            }
            let at_answer = self.answer.is_some() && self.depth == self.answer_depth();
            match b {
                b'"' => {
                    self.in_str = true;
                    if at_answer && self.answer == Some(State::ExpectKey) {
                        self.answer = Some(State::InKey);
                        self.key.clear();
                    } else {
                        self.capture(b);
                    }
                }
                b'{' | b'[' => {
                    self.capture(b);
                    self.depth = self.depth.saturating_add(1);
                    if self.top == Top::Unknown {
                        self.top = if b == b'[' { Top::Batch } else { Top::Single };
                    }
                    if b == b'{' && self.answer.is_none() && self.depth == self.answer_depth() {
                        self.answer = Some(State::ExpectKey);
                        self.id.clear();
                        self.id_seen = false;
                    }
                }
                b'}' | b']' => {
                    if at_answer && b == b'}' {
                        self.answer = None;
                        answered(self.take_id());
                    } else {
                        self.capture(b);
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                b':' if at_answer && self.answer == Some(State::AfterKey) => {
                    let is_id = self.key == b"id";
                    self.id_seen |= is_id;
                    if is_id {
                        self.id.clear();
                    }
                    self.answer = Some(State::Value(is_id));
                }
                b',' if at_answer => self.answer = Some(State::ExpectKey),
                _ => self.capture(b),
            }
        }
    }

    fn take_id(&mut self) -> Option<Value> {
        if !self.id_seen || self.id.len() > MAX_ID {
            return None;
        }
        serde_json::from_slice(&self.id).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(body: &str, chunk: usize) -> Vec<Option<Value>> {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for piece in body.as_bytes().chunks(chunk.max(1)) {
            scanner.feed(piece, |id| out.push(id));
        }
        out
    }

    #[test]
    fn finds_every_answer_and_its_id_in_any_chunking() {
        let body = r#" [ {"jsonrpc":"2.0","id":1,"result":{"id":9,"x":[1,{"id":8}]}},
            {"result":"a}\"{,","id" : "q\"}" },{"id":null,"error":{"code":-1,"message":"]"}},
            {"jsonrpc":"2.0","result":[]} ] "#;
        let want = vec![Some(json!(1)), Some(json!("q\"}")), Some(Value::Null), None];
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(ids(body, chunk), want, "chunks of {chunk}");
        }
        assert_eq!(
            ids(r#"{"jsonrpc":"2.0","result":"0x1","id":"abc"}"#, 5),
            vec![Some(json!("abc"))]
        );
        assert_eq!(ids("", 5), vec![]);
        assert_eq!(ids("[]", 5), vec![]);
    }

    #[test]
    fn a_huge_id_is_not_kept() {
        let body = format!(
            r#"[{{"id":"{}","result":1}},{{"id":2}}]"#,
            "x".repeat(10_000)
        );
        assert_eq!(ids(&body, 64), vec![None, Some(json!(2))]);
    }
}
