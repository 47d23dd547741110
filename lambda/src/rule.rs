//! What an AWS IoT topic rule hands a function: the sender's MQTT client id and its message.
//!
//! A door's message cannot be trusted to say who sent it: any door may publish on
//! `acceso/logs` and `acceso/sync/request`, and could put another door's name in the message.
//! Only the broker knows the sender (the client id, which the device policy pins to the thing
//! name). So the rules wrap the message whole, untouched, beside the client id:
//!
//! ```sql
//! SELECT clientid() AS client_id, encode(*, 'base64') AS payload FROM 'acceso/logs'
//! ```
//!
//! (`SELECT *, clientid() AS client_id` would mix the two: a message with its own `client_id`
//! field would collide with the rule's.) The same pair reaches SQS when the rule's action fails:
//! the rule's error action sends `{"clientId", "base64OriginalPayload", "failures", ...}`, and
//! Lambda's dead-letter queue for a failed asynchronous invocation the invocation's own input.
//! Both are read here, so the retry queue holds nothing the function cannot take.

use base64::Engine;
use serde_json::Value;

/// A device's message as the broker received it, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromDevice {
    /// The MQTT client id: the thing name.
    pub client_id: String,
    /// The message, byte for byte.
    pub payload: Vec<u8>,
}

/// `Some` when `input` is a rule's wrapping (either form above), `None` when it is something
/// else (a message put on the queue or invoked directly by an operator's tooling), and an
/// error naming the field when it is a wrapping that is broken.
pub fn from_device(input: &Value) -> Option<Result<FromDevice, String>> {
    let obj = input.as_object()?;
    let (id_key, payload_key) = if obj.contains_key("base64OriginalPayload") {
        ("clientId", "base64OriginalPayload")
    } else if obj.contains_key("client_id") && obj.contains_key("payload") {
        ("client_id", "payload")
    } else {
        return None;
    };
    Some(read(obj, id_key, payload_key))
}

fn read(
    obj: &serde_json::Map<String, Value>,
    id_key: &str,
    payload_key: &str,
) -> Result<FromDevice, String> {
    let client_id = match obj.get(id_key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("{id_key}: missing or not a non-empty string")),
    };
    let Some(Value::String(b64)) = obj.get(payload_key) else {
        return Err(format!("{payload_key}: not a string"));
    };
    let payload = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("{payload_key}: not base64: {e}"))?;
    Ok(FromDevice { client_id, payload })
}

impl FromDevice {
    /// The message as text (every acceso message is JSON).
    pub fn text(&self) -> Result<&str, String> {
        std::str::from_utf8(&self.payload)
            .map_err(|e| format!("message from client {:?} is not UTF-8: {e}", self.client_id))
    }

    /// The message parsed as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(self.text()?)
            .map_err(|e| format!("message from client {:?}: {e}", self.client_id))
    }

    /// Refuses a message whose `device` is not its sender.
    pub fn check_device(&self, device: &str) -> Result<(), String> {
        if device == self.client_id {
            Ok(())
        } else {
            Err(format!(
                "client {:?} sent a message in the name of device {device:?}",
                self.client_id
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn the_rule_output_and_the_error_action_message_give_the_same_pair() {
        let msg = r#"{"device":"door-1"}"#;
        let rule = json!({"client_id": "door-1", "payload": b64(msg)});
        let error_action = json!({
            "ruleName": "IngestRule", "topic": "acceso/logs", "cloudwatchTraceId": "t",
            "clientId": "door-1", "base64OriginalPayload": b64(msg),
            "failures": [{"failedAction": "LambdaAction", "failedResource": "f", "errorMessage": "throttled"}]
        });
        for input in [rule, error_action] {
            let got = from_device(&input).unwrap().unwrap();
            assert_eq!(got.client_id, "door-1");
            assert_eq!(got.text().unwrap(), msg);
            assert_eq!(got.json().unwrap(), json!({"device": "door-1"}));
            got.check_device("door-1").unwrap();
            let err = got.check_device("door-2").unwrap_err();
            assert!(err.contains("door-1") && err.contains("door-2"), "{err}");
        }
    }

    #[test]
    fn anything_else_is_not_a_wrapping_and_a_broken_one_names_its_field() {
        assert_eq!(from_device(&json!({"device": "door-1"})), None);
        assert_eq!(from_device(&json!("text")), None);
        // A message that has a client_id of its own but no payload is a bare message.
        assert_eq!(from_device(&json!({"client_id": "x", "device": "x"})), None);
        let cases = [
            (json!({"client_id": "", "payload": b64("{}")}), "client_id"),
            (json!({"client_id": 7, "payload": b64("{}")}), "client_id"),
            (
                json!({"client_id": "d", "payload": "***"}),
                "payload: not base64",
            ),
            (
                json!({"client_id": "d", "payload": 1}),
                "payload: not a string",
            ),
            (json!({"base64OriginalPayload": b64("{}")}), "clientId"),
        ];
        for (input, want) in cases {
            let err = from_device(&input).unwrap().unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
        let not_utf8 = json!({"client_id": "d", "payload": base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe])});
        let got = from_device(&not_utf8).unwrap().unwrap();
        assert!(got.text().unwrap_err().contains("UTF-8"));
        assert!(got.json().is_err());
    }
}
