//! JSON-RPC over HTTP as the requestor's user makes it: a plain client, basic auth if
//! given, no proxy.

use serde_json::{json, Value};

/// An HTTP answer as a requestor's user sees it.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The JSON-RPC `result`, or null.
    pub fn result(&self) -> Value {
        serde_json::from_str::<Value>(&self.body)
            .map(|v| v["result"].clone())
            .unwrap_or(Value::Null)
    }
}

/// A JSON-RPC call with a plain HTTP client, with basic auth if given, as the
/// requestor's user would make it.
pub async fn call(url: &str, auth: Option<(&str, &str)>, method: &str) -> Reply {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}));
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url} answers: {e}"));
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}
