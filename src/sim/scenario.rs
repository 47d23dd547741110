//! Scenario files: parsed and checked whole before anything runs, so a malformed scenario fails
//! at once with the step and key at fault, never halfway through.

use std::path::{Path, PathBuf};

use acceso_protocol::CardUid;
use jiff::Timestamp;
use serde_json::{Map, Value};

use super::SimError;

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Overrides of the agent's config, same keys as the TOML file.
    pub config: Map<String, Value>,
    pub steps: Vec<Step>,
    /// Relative paths in steps are relative to this directory.
    pub base: PathBuf,
}

/// Who signs an update step's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// The simulated cloud, whose key the agent pins: a change the cloud made.
    Cloud,
    /// Nobody (`"unsigned": true`): not the cloud's change.
    Unsigned,
    /// A key the agent does not trust (`"signed_by": "other"`): not the cloud's change.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Publish (or, if `lost`, only record) an update as the cloud would.
    Update {
        update: Value,
        lost: bool,
        retain: bool,
        signing: Signing,
    },
    /// Publish these exact bytes on the updates topic.
    UpdatesRaw(String),
    /// A card enters the field, stays `hold_ms`, and leaves.
    Card {
        uid: CardUid,
        hold_ms: u64,
        fault: Option<CardFault>,
    },
    /// The broker goes away (`false`) or comes back (`true`).
    Broker {
        up: bool,
    },
    /// The wall clock the agent sees.
    Clock {
        time: Timestamp,
        trusted: bool,
    },
    Wait {
        ms: u64,
    },
    Restart {
        crash: bool,
    },
    /// The door contact reports the door open or closed.
    Door {
        open: bool,
    },
    /// The exit button is pressed (and released).
    ExitButton,
    /// The camera sees this photo for `frames` frames (default: `face.frames`, enough for one
    /// decision), then an empty scene (the person walks on).
    Face {
        photo: PathBuf,
        frames: Option<u32>,
    },
}

/// Reader faults a card step can inject (all through the register-level MFRC522 simulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardFault {
    /// The card's first anticollision answer has a wrong BCC.
    BadBcc,
    /// The card's first SELECT answer has a wrong CRC.
    CrcError,
    /// A second card is in the field at the same time.
    Collision(CardUid),
    /// The card leaves right after answering the wake-up, in the middle of the read.
    RemovedMidRead,
    /// The chip stops answering (reads 0x00) while the card is held, then recovers.
    ChipSilent,
    /// The chip resets itself (brown-out, ESD) as the card arrives.
    ChipReset,
}

/// Step kinds this build knows but cannot run, and what they need.
const NOT_YET: &[(&str, &str)] = if cfg!(feature = "face") {
    &[]
} else {
    &[("face", "face recognition: built without the `face` feature")]
};

const DEFAULT_HOLD_MS: u64 = 300;

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Scenario(format!("cannot read {}: {e}", path.display())))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Scenario::parse(&text, &base)
            .map_err(|e| SimError::Scenario(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str, base: &Path) -> Result<Scenario, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(mut top) = value else {
            return Err("a scenario is a JSON object with `config` and `steps`".into());
        };
        let config = match top.remove("config") {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err("`config` must be an object".into()),
        };
        let steps = match top.remove("steps") {
            Some(Value::Array(steps)) => steps,
            Some(_) => return Err("`steps` must be an array".into()),
            None => return Err("missing `steps`".into()),
        };
        if let Some(key) = top.keys().next() {
            return Err(format!(
                "unknown key `{key}` (a scenario has `config` and `steps`)"
            ));
        }
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, s)| parse_step(s).map_err(|e| format!("step {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Scenario {
            config,
            steps,
            base: base.to_path_buf(),
        })
    }
}

fn parse_step(step: &Value) -> Result<Step, String> {
    let Value::Object(map) = step else {
        return Err(format!("a step is a JSON object, not {step}"));
    };
    let kind_keys = [
        "update",
        "updates_raw",
        "card",
        "broker",
        "clock",
        "wait_ms",
        "restart",
        "face",
        "exit_button",
        "door",
    ];
    let kinds: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| kind_keys.contains(k))
        .collect();
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => {
            let keys: Vec<&String> = map.keys().collect();
            return Err(format!("unknown step {keys:?}"));
        }
        many => return Err(format!("one step has several kinds: {many:?}")),
    };
    if let Some((_, needs)) = NOT_YET.iter().find(|(k, _)| *k == kind) {
        return Err(format!(
            "`{kind}` steps are not supported yet by this build (they need {needs})"
        ));
    }
    let allowed: &[&str] = match kind {
        "update" => &["lost", "retain", "unsigned", "signed_by"],
        "card" => &["hold_ms", "fault", "also"],
        "clock" => &["trusted"],
        "face" => &["frames"],
        _ => &[],
    };
    if let Some(extra) = map
        .keys()
        .find(|k| k.as_str() != kind && !allowed.contains(&k.as_str()))
    {
        return Err(format!("`{kind}` step has an unknown key `{extra}`"));
    }
    let flag = |key: &str| -> Result<bool, String> {
        match map.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("`{key}` must be true or false, not {v}")),
        }
    };
    let value = &map[kind];
    match kind {
        "update" => {
            let signing = match (flag("unsigned")?, map.get("signed_by")) {
                (false, None) => Signing::Cloud,
                (true, None) => Signing::Unsigned,
                (false, Some(Value::String(s))) if s == "cloud" => Signing::Cloud,
                (false, Some(Value::String(s))) if s == "other" => Signing::Other,
                (false, Some(v)) => {
                    return Err(format!(
                        "`signed_by` must be \"cloud\" or \"other\", not {v}"
                    ))
                }
                (true, Some(_)) => {
                    return Err("`unsigned` and `signed_by` contradict each other".into())
                }
            };
            if signing != Signing::Cloud && flag("lost")? {
                return Err(
                    "a `lost` update is a change the cloud made: it cannot be `unsigned` or `signed_by` another key"
                        .into(),
                );
            }
            if let Some(photos) = value.pointer("/user/face_photos") {
                if !cfg!(feature = "face") {
                    return Err(
                        "`face_photos` needs face recognition: built without the `face` feature"
                            .into(),
                    );
                }
                let ok = photos
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
                if !ok {
                    return Err(format!(
                        "`face_photos` must be a list of photo paths, not {photos}"
                    ));
                }
            }
            if !value.is_object() {
                return Err(format!("`update` must be an update object, not {value}"));
            }
            Ok(Step::Update {
                update: value.clone(),
                lost: flag("lost")?,
                retain: flag("retain")?,
                signing,
            })
        }
        "updates_raw" => match value {
            Value::String(s) => Ok(Step::UpdatesRaw(s.clone())),
            v => Err(format!("`updates_raw` must be a string, not {v}")),
        },
        "card" => {
            let Value::String(s) = value else {
                return Err(format!("`card` must be a UID string, not {value}"));
            };
            let uid = s.parse::<CardUid>().map_err(|e| e.to_string())?;
            let hold_ms = match map.get("hold_ms") {
                None => DEFAULT_HOLD_MS,
                Some(v) => v
                    .as_u64()
                    .filter(|ms| *ms <= 600_000)
                    .ok_or_else(|| format!("`hold_ms` must be 0 to 600000, not {v}"))?,
            };
            let also = match map.get("also") {
                None => None,
                Some(Value::String(s)) => {
                    Some(s.parse::<CardUid>().map_err(|e| format!("`also`: {e}"))?)
                }
                Some(v) => return Err(format!("`also` must be a UID string, not {v}")),
            };
            let fault = match (map.get("fault"), also) {
                (None, None) => None,
                (None, Some(_)) => return Err("`also` goes with \"fault\": \"collision\"".into()),
                (Some(f), also) => Some(match (f.as_str(), also) {
                    (Some("collision"), Some(other)) if other != uid => CardFault::Collision(other),
                    (Some("collision"), _) => {
                        return Err("\"collision\" needs `also`: a second, different UID".into())
                    }
                    (_, Some(_)) => return Err("`also` goes with \"fault\": \"collision\"".into()),
                    (Some("bad_bcc"), None) => CardFault::BadBcc,
                    (Some("crc_error"), None) => CardFault::CrcError,
                    (Some("removed_mid_read"), None) => CardFault::RemovedMidRead,
                    (Some("chip_silent"), None) => CardFault::ChipSilent,
                    (Some("chip_reset"), None) => CardFault::ChipReset,
                    _ => {
                        return Err(format!(
                            "unknown `fault` {f}: one of bad_bcc, crc_error, collision, removed_mid_read, chip_silent, chip_reset"
                        ))
                    }
                }),
            };
            Ok(Step::Card {
                uid,
                hold_ms,
                fault,
            })
        }
        "face" => {
            let Value::String(photo) = value else {
                return Err(format!("`face` must be a photo path, not {value}"));
            };
            let frames = match map.get("frames") {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| format!("`frames` must be 1 to 100, not {v}"))?
                        as u32,
                ),
            };
            Ok(Step::Face {
                photo: PathBuf::from(photo),
                frames,
            })
        }
        "broker" => match value.as_str() {
            Some("up") => Ok(Step::Broker { up: true }),
            Some("down") => Ok(Step::Broker { up: false }),
            _ => Err(format!("`broker` must be \"up\" or \"down\", not {value}")),
        },
        "clock" => {
            let Value::String(s) = value else {
                return Err(format!("`clock` must be an RFC 3339 time, not {value}"));
            };
            let time = s
                .parse::<Timestamp>()
                .map_err(|e| format!("`clock` {s:?} is not an RFC 3339 time: {e}"))?;
            let trusted = match map.get("trusted") {
                None => true,
                Some(_) => flag("trusted")?,
            };
            Ok(Step::Clock { time, trusted })
        }
        "wait_ms" => value
            .as_u64()
            .filter(|ms| *ms <= 3_600_000)
            .map(|ms| Step::Wait { ms })
            .ok_or_else(|| format!("`wait_ms` must be 0 to 3600000, not {value}")),
        "door" => match value.as_str() {
            Some("open") => Ok(Step::Door { open: true }),
            Some("closed") => Ok(Step::Door { open: false }),
            _ => Err(format!(
                "`door` must be \"open\" or \"closed\", not {value}"
            )),
        },
        "exit_button" => match value {
            Value::Bool(true) => Ok(Step::ExitButton),
            v => Err(format!("`exit_button` must be true, not {v}")),
        },
        "restart" => match value.as_str() {
            Some("graceful") => Ok(Step::Restart { crash: false }),
            Some("crash") => Ok(Step::Restart { crash: true }),
            _ => Err(format!(
                "`restart` must be \"graceful\" or \"crash\", not {value}"
            )),
        },
        other => Err(format!("unknown step `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(text, Path::new("/s"))
    }

    #[test]
    fn every_supported_step_parses() {
        let s = parse(
            r#"{"config":{"door":{"unlock_ms":1000}},"steps":[
                {"update":{"version":1,"op":"delete_user","user_id":"u"},"retain":true},
                {"update":{"version":2,"op":"delete_user","user_id":"u"},"lost":true},
                {"updates_raw":"{"},
                {"card":"de:ad:be:ef","hold_ms":50},
                {"card":"01020304"},
                {"broker":"down"},{"broker":"up"},
                {"clock":"2026-01-01T00:00:00Z","trusted":false},
                {"wait_ms":10},
                {"restart":"graceful"},{"restart":"crash"},
                {"door":"open"},{"door":"closed"},{"exit_button":true}
            ]}"#,
        )
        .unwrap();
        assert_eq!(s.steps.len(), 14);
        assert_eq!(s.steps[11], Step::Door { open: true });
        assert_eq!(s.steps[13], Step::ExitButton);
        assert_eq!(
            s.steps[3],
            Step::Card {
                uid: "DEADBEEF".parse().unwrap(),
                hold_ms: 50,
                fault: None,
            }
        );
        assert!(matches!(
            s.steps[4],
            Step::Card {
                hold_ms: DEFAULT_HOLD_MS,
                ..
            }
        ));
        assert!(matches!(
            s.steps[1],
            Step::Update {
                lost: true,
                retain: false,
                ..
            }
        ));
        assert!(matches!(s.steps[7], Step::Clock { trusted: false, .. }));
        assert_eq!(s.config["door"]["unlock_ms"], 1000);
    }

    #[test]
    fn card_faults_parse() {
        let s = parse(
            r#"{"steps":[
                {"card":"DEADBEEF","fault":"bad_bcc"},
                {"card":"DEADBEEF","fault":"crc_error"},
                {"card":"DEADBEEF","fault":"collision","also":"01020304"},
                {"card":"DEADBEEF","fault":"removed_mid_read"},
                {"card":"DEADBEEF","fault":"chip_silent"},
                {"card":"DEADBEEF","fault":"chip_reset"}
            ]}"#,
        )
        .unwrap();
        let faults: Vec<_> = s
            .steps
            .iter()
            .map(|s| match s {
                Step::Card { fault, .. } => fault.clone().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            faults,
            [
                CardFault::BadBcc,
                CardFault::CrcError,
                CardFault::Collision("01020304".parse().unwrap()),
                CardFault::RemovedMidRead,
                CardFault::ChipSilent,
                CardFault::ChipReset,
            ]
        );
    }

    /// What a face step's error says: its own problem, or that this build has no faces.
    fn with_faces(problem: &'static str) -> &'static str {
        if cfg!(feature = "face") {
            problem
        } else {
            "built without the `face` feature"
        }
    }

    #[test]
    fn malformed_scenarios_name_the_step_and_the_problem() {
        let cases = [
            (r#"{"steps":[{"jump":1}]}"#, "step 1: unknown step"),
            (r#"{"steps":[{"wait_ms":1},{"card":"XYZ"}]}"#, "step 2"),
            (
                r#"{"steps":[{"card":"DEADBEEF","colour":1}]}"#,
                "unknown key `colour`",
            ),
            (r#"{"steps":[{"broker":"sideways"}]}"#, "\"up\" or \"down\""),
            (r#"{"steps":[{"clock":"yesterday"}]}"#, "RFC 3339"),
            (r#"{"steps":[{"wait_ms":-1}]}"#, "wait_ms"),
            (
                r#"{"steps":[{"card":"DEADBEEF","wait_ms":1}]}"#,
                "several kinds",
            ),
            (r#"{"steps":[{"face":7}]}"#, with_faces("photo path")),
            (
                r#"{"steps":[{"face":"a.jpg","frames":0}]}"#,
                with_faces("`frames` must be"),
            ),
            (
                r#"{"steps":[{"update":{"user":{"face_photos":"a.jpg"}}}]}"#,
                with_faces("list of photo paths"),
            ),
            (r#"{"steps":[{"door":"ajar"}]}"#, "\"open\" or \"closed\""),
            (r#"{"steps":[{"exit_button":false}]}"#, "must be true"),
            (
                r#"{"steps":[{"card":"DEADBEEF","fault":"melted"}]}"#,
                "unknown `fault`",
            ),
            (
                r#"{"steps":[{"card":"DEADBEEF","fault":"collision"}]}"#,
                "needs `also`",
            ),
            (
                r#"{"steps":[{"card":"DEADBEEF","also":"01020304"}]}"#,
                "goes with",
            ),
            (r#"{"steps":[]," extra":1}"#, "unknown key"),
            (r#"{"config":{}}"#, "missing `steps`"),
            (r#"[1]"#, "JSON object"),
        ];
        for (text, expect) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(expect), "{text}: {err:?} lacks {expect:?}");
        }
    }
}
