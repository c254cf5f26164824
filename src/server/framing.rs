//! SockJS's framing, shared by the HTTP transports (`sockjs.rs`) and the framed websocket
//! (`websocket.rs`): `a[...]` arrays of DDP texts, `c[code,"reason"]` close frames, and the
//! client's payloads. It must not know about sessions or sockets.

use crate::protocol::Frame;

/// `a[...]`: DDP texts as a JSON array of strings.
pub fn array_frame(frames: &[Frame]) -> String {
    let mut out = String::with_capacity(frames.iter().map(|f| f.len() + 8).sum::<usize>() + 3);
    out.push_str("a[");
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::model::value::write_str(frame.as_str(), &mut out);
    }
    out.push(']');
    out
}

/// A client payload: a JSON array of strings, or one JSON string. `None` is broken framing.
pub fn parse_client_payload(text: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::String(s) => Some(vec![s]),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// SockJS's close frame: `c[code,"reason"]`.
pub fn sockjs_close_frame(code: u16, text: &str) -> String {
    let mut out = format!("c[{code},");
    crate::model::value::write_str(text, &mut out);
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::server as frames;

    #[test]
    fn close_frames_carry_code_and_reason() {
        assert_eq!(
            sockjs_close_frame(3000, "Go \"away\""),
            r#"c[3000,"Go \"away\""]"#
        );
    }

    #[test]
    fn array_frames_double_encode_ddp() {
        let text = array_frame(&[frames::connected("abc")]);
        assert_eq!(text, r#"a["{\"msg\":\"connected\",\"session\":\"abc\"}"]"#);
    }

    #[test]
    fn client_payloads_are_arrays_of_strings_or_one_string() {
        assert_eq!(
            parse_client_payload(r#"["a","b"]"#),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_client_payload(r#""a""#), Some(vec!["a".into()]));
        assert_eq!(parse_client_payload(r#"[1]"#), None);
        assert_eq!(parse_client_payload("nope"), None);
    }
}
