//! Finds the answers in what the node sends (an HTTP answer body, or a
//! WebSocket message) as it streams to the client, so that it is never
//! buffered whole (an eth_getLogs answer can be hundreds of MiB) and each
//! answer is billed as it passes.
//!
//! The node is trusted to send valid JSON; the scanner only tracks nesting
//! and strings, and keeps the raw text of each answer's `id` and `method`
//! (bounded): the id matches an answer to its call, and the method tells a
//! subscription notification (which has no id) from an answer.

use serde_json::Value;

/// Longer ids are not kept: such an answer is matched as one without id.
const MAX_ID: usize = 256;
/// Longer method names are not kept (no JSON-RPC method is that long).
const MAX_METHOD: usize = 64;

/// An object found at the answer depth: an answer, or a notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// `None` when it had no readable id.
    pub id: Option<Value>,
    /// `None` when it had no readable method (answers have none).
    pub method: Option<String>,
}

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
    /// In a member's value.
    Value(Field),
}

/// Which member's value is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Id,
    Method,
    Other,
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
    method: Vec<u8>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            top: Top::Unknown,
            depth: 0,
            in_str: false,
            escaped: false,
            answer: None,
            key: Vec::with_capacity(7),
            id: Vec::new(),
            id_seen: false,
            method: Vec::new(),
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

    /// Starts over, for the next WebSocket message (keeps the allocations).
    pub fn reset(&mut self) {
        let (mut key, mut id, mut method) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.method),
        );
        key.clear();
        id.clear();
        method.clear();
        *self = Scanner {
            key,
            id,
            method,
            ..Scanner::default()
        };
    }

    fn capture(&mut self, b: u8) {
        let (field, max) = match self.answer {
            Some(State::Value(Field::Id)) => (&mut self.id, MAX_ID),
            Some(State::Value(Field::Method)) => (&mut self.method, MAX_METHOD),
            _ => return,
        };
        if field.len() <= max {
            field.push(b);
        }
    }

    /// Reads one more piece; calls `found` for each answer object (or
    /// notification) that ends in it.
    pub fn feed(&mut self, chunk: &[u8], mut found: impl FnMut(Found)) {
        for &b in chunk {
            if self.in_str {
                self.capture(b);
                if self.answer == Some(State::InKey) && b != b'"' && self.key.len() < 7 {
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
                        self.method.clear();
                    }
                }
                b'}' | b']' => {
                    if at_answer && b == b'}' {
                        self.answer = None;
                        found(self.take());
                    } else {
                        self.capture(b);
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                b':' if at_answer && self.answer == Some(State::AfterKey) => {
                    let field = match self.key.as_slice() {
                        b"id" => Field::Id,
                        b"method" => Field::Method,
                        _ => Field::Other,
                    };
                    match field {
                        Field::Id => {
                            self.id_seen = true;
                            self.id.clear();
                        }
                        Field::Method => self.method.clear(),
                        Field::Other => {}
                    }
                    self.answer = Some(State::Value(field));
                }
                b',' if at_answer => self.answer = Some(State::ExpectKey),
                _ => self.capture(b),
            }
        }
    }

    fn take(&mut self) -> Found {
        let id = match self.id_seen && self.id.len() <= MAX_ID {
            true => serde_json::from_slice(&self.id).ok(),
            false => None,
        };
        let method = match self.method.len() <= MAX_METHOD {
            true => serde_json::from_slice(&self.method).ok(),
            false => None,
        };
        Found { id, method }
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
            scanner.feed(piece, |found| out.push(found.id));
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

    #[test]
    fn finds_methods_and_starts_over_per_message() {
        let note = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x1","result":{"method":"x","id":5}}}"#;
        let answer = r#"{"id":7,"jsonrpc":"2.0","result":"0x1"}"#;
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for message in [note, answer, note] {
            for piece in message.as_bytes().chunks(3) {
                scanner.feed(piece, |found| out.push(found));
            }
            scanner.reset();
        }
        let note = Found {
            id: None,
            method: Some("eth_subscription".into()),
        };
        let answer = Found {
            id: Some(json!(7)),
            method: None,
        };
        assert_eq!(out, vec![note.clone(), answer, note]);
        // A method that is not a string, or too long, is not kept.
        let mut odd = Vec::new();
        let long = format!(r#"{{"method":"{}"}}{{"method":1}}"#, "m".repeat(100));
        scanner.feed(long.as_bytes(), |found| odd.push(found.method));
        assert_eq!(odd, vec![None, None]);
    }
}
