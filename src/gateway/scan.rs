//! Finds the answers in what the node sends (an HTTP answer body, or a
//! WebSocket message) as it streams to the client, so that it is never
//! buffered whole (an eth_getLogs answer can be hundreds of MiB) and each
//! answer is billed as it passes.
//!
//! The node is trusted to send valid JSON; the scanner only tracks nesting
//! and strings. Of each answer it keeps the key of its `id` (of any length,
//! see `ids`), its `method` (bounded), and whether it is an error or the
//! result `true`: the id matches an answer to its call, the method tells a
//! subscription notification (which has no id) from an answer, and the rest
//! tells a subscription made or ended.

use super::ids::IdHasher;

/// Longer method names are not kept (no JSON-RPC method is that long).
const MAX_METHOD: usize = 64;
/// A result is kept only as long as `true` needs.
const MAX_RESULT: usize = 4;

/// An object found at the answer depth: an answer, or a notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The key of its id (see `ids`); `None` when it had no id, or one that
    /// is not JSON.
    pub key: Option<u64>,
    /// `None` when it had no readable method (answers have none).
    pub method: Option<String>,
    /// It has an `error` member.
    pub error: bool,
    /// Its `result` is `true` (an `eth_unsubscribe` that ended one).
    pub result_true: bool,
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
    Result,
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
    id: IdHasher,
    id_seen: bool,
    method: Vec<u8>,
    result: Vec<u8>,
    error: bool,
    /// Answer objects found since the start.
    found: u64,
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
            id: IdHasher::default(),
            id_seen: false,
            method: Vec::new(),
            result: Vec::new(),
            error: false,
            found: 0,
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
        let (mut key, mut id, mut method, mut result) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.method),
            std::mem::take(&mut self.result),
        );
        key.clear();
        id.clear();
        method.clear();
        result.clear();
        *self = Scanner {
            key,
            id,
            method,
            result,
            ..Scanner::default()
        };
    }

    /// Whether the answer is an array (a batch's).
    pub fn is_batch(&self) -> bool {
        self.top == Top::Batch
    }

    /// Whether anything but whitespace came yet.
    pub fn started(&self) -> bool {
        self.top != Top::Unknown
    }

    /// Answer objects found since the start.
    pub fn found(&self) -> u64 {
        self.found
    }

    fn capture(&mut self, b: u8) {
        let (field, max) = match self.answer {
            Some(State::Value(Field::Id)) => return self.id.push(b),
            Some(State::Value(Field::Method)) => (&mut self.method, MAX_METHOD),
            Some(State::Value(Field::Result)) => (&mut self.result, MAX_RESULT),
            _ => return,
        };
        if field.len() <= max {
            field.push(b);
        }
    }

    /// Reads one more piece; calls `found` for each answer object (or
    /// notification) that ends in it. Returns where in `chunk` the `]` that
    /// ends a batch's answer stands, if it is in this piece.
    pub fn feed(&mut self, chunk: &[u8], mut found: impl FnMut(Found)) -> Option<usize> {
        let mut closed = None;
        for (i, &b) in chunk.iter().enumerate() {
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
                        self.result.clear();
                        self.error = false;
                    }
                }
                b'}' | b']' => {
                    if at_answer && b == b'}' {
                        self.answer = None;
                        self.found = self.found.saturating_add(1);
                        found(self.take());
                    } else {
                        self.capture(b);
                    }
                    self.depth = self.depth.saturating_sub(1);
                    if b == b']' && self.depth == 0 && self.top == Top::Batch {
                        closed = Some(i);
                    }
                }
                b':' if at_answer && self.answer == Some(State::AfterKey) => {
                    let field = match self.key.as_slice() {
                        b"id" => Field::Id,
                        b"method" => Field::Method,
                        b"result" => Field::Result,
                        _ => Field::Other,
                    };
                    match field {
                        Field::Id => {
                            self.id_seen = true;
                            self.id.clear();
                        }
                        Field::Method => self.method.clear(),
                        Field::Result => self.result.clear(),
                        Field::Other => self.error |= self.key.as_slice() == b"error",
                    }
                    self.answer = Some(State::Value(field));
                }
                b',' if at_answer => self.answer = Some(State::ExpectKey),
                _ => self.capture(b),
            }
        }
        closed
    }

    fn take(&mut self) -> Found {
        let key = match self.id_seen {
            true => self.id.finish(),
            false => None,
        };
        let method = match self.method.len() <= MAX_METHOD {
            true => serde_json::from_slice(&self.method).ok(),
            false => None,
        };
        let result_true = self.result.trim_ascii() == b"true";
        let error = std::mem::take(&mut self.error);
        self.result.clear();
        Found {
            key,
            method,
            error,
            result_true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ids::key_of;

    fn keys(body: &str, chunk: usize) -> Vec<Option<u64>> {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for piece in body.as_bytes().chunks(chunk.max(1)) {
            scanner.feed(piece, |found| out.push(found.key));
        }
        out
    }

    fn key(id: &str) -> Option<u64> {
        key_of(id.as_bytes())
    }

    #[test]
    fn finds_every_answer_and_its_id_in_any_chunking() {
        let body = r#" [ {"jsonrpc":"2.0","id":1,"result":{"id":9,"x":[1,{"id":8}]}},
            {"result":"a}\"{,","id" : "q\"}" },{"id":null,"error":{"code":-1,"message":"]"}},
            {"jsonrpc":"2.0","result":[]} ] "#;
        let want = vec![key("1"), key(r#""q\"}""#), key("null"), None];
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(keys(body, chunk), want, "chunks of {chunk}");
        }
        assert_eq!(
            keys(r#"{"jsonrpc":"2.0","result":"0x1","id":"abc"}"#, 5),
            vec![key(r#""abc""#)]
        );
        assert_eq!(keys("", 5), vec![]);
        assert_eq!(keys("[]", 5), vec![]);
    }

    #[test]
    fn a_huge_id_is_keyed_without_being_held() {
        let id = format!(r#""{}""#, "x".repeat(100_000));
        let body = format!(r#"[{{"id":{id},"result":1}},{{"id":2}}]"#);
        assert_eq!(keys(&body, 64), vec![key(&id), key("2")]);
        let mut scanner = Scanner::default();
        scanner.feed(body.as_bytes(), |_| {});
        assert!(scanner.id.held() < 1024, "the id was held whole");
    }

    #[test]
    fn tells_errors_true_results_and_where_a_batch_ends() {
        let body =
            r#"[{"id":1,"result": true },{"id":2,"error":{"code":1}},{"id":3,"result":"0x1"}] "#;
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        let closed = scanner.feed(body.as_bytes(), |f| out.push((f.error, f.result_true)));
        assert_eq!(out, vec![(false, true), (true, false), (false, false)]);
        assert_eq!(closed, body.rfind(']'));
        assert!(scanner.is_batch());
        assert_eq!(scanner.found(), 3);
        let mut single = Scanner::default();
        assert_eq!(single.feed(br#"{"id":1,"result":[]}"#, |_| {}), None);
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
            method: Some("eth_subscription".into()),
            ..Found::default()
        };
        let answer = Found {
            key: key("7"),
            ..Found::default()
        };
        assert_eq!(out, vec![note.clone(), answer, note]);
        // A method that is not a string, or too long, is not kept.
        let mut odd = Vec::new();
        let long = format!(r#"{{"method":"{}"}}{{"method":1}}"#, "m".repeat(100));
        scanner.feed(long.as_bytes(), |found| odd.push(found.method));
        assert_eq!(odd, vec![None, None]);
    }
}
