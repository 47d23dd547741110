//! MQTT topic names, all under one configurable prefix (default `acceso`).

/// The topics of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new("acceso")
    }
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Device -> cloud: access events.
    pub fn logs(&self) -> String {
        format!("{}/logs", self.prefix)
    }

    /// Cloud -> devices: user updates, fleet-wide.
    pub fn updates(&self) -> String {
        format!("{}/updates", self.prefix)
    }

    /// Device -> cloud: snapshot requests.
    pub fn sync_request(&self) -> String {
        format!("{}/sync/request", self.prefix)
    }

    /// Cloud -> one device: snapshot pages.
    pub fn sync_for(&self, device: &str) -> String {
        format!("{}/sync/{device}", self.prefix)
    }

    /// Device -> cloud: online/offline, applied version, health.
    pub fn status_of(&self, device: &str) -> String {
        format!("{}/devices/{device}/status", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_topics_follow_the_design() {
        let t = Topics::default();
        assert_eq!(t.logs(), "acceso/logs");
        assert_eq!(t.updates(), "acceso/updates");
        assert_eq!(t.sync_request(), "acceso/sync/request");
        assert_eq!(t.sync_for("door-1"), "acceso/sync/door-1");
        assert_eq!(t.status_of("door-1"), "acceso/devices/door-1/status");
        assert_eq!(Topics::new("site7/").logs(), "site7/logs");
    }
}
